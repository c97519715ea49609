"""Video I/O with PyAV and VideoAlign frame sampling for the reward model.

Contract: a video in memory is a ``uint8`` numpy array ``(T, H, W, 3)`` (RGB); on disk it is an mp4
(H.264, yuv420p, even width and height). Every failure to read or write a video raises
:class:`VideoError`, whose message names the file and the problem; no PyAV trace escapes.

Frame sampling follows Qwen2-VL's ``fetch_video`` / ``smart_resize`` as VideoAlign uses them: take
``round(T / src_fps * fps)`` frames (even, at least 2) evenly spaced, then resize so both sides are
multiples of 28 and ``H * W`` lies in ``[min_pixels, max_pixels]``, keeping the aspect ratio.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

Source = str | Path | bytes

PATCH_FACTOR = 28  # Qwen2-VL: 14-pixel patches merged 2x2
FRAME_FACTOR = 2  # Qwen2-VL: temporal patch size
VIDEO_MIN_PIXELS = 128 * 28 * 28  # Qwen2-VL default, as VideoAlign
VIDEO_MAX_PIXELS = 448 * 448  # VideoAlign inference default
MAX_ASPECT_RATIO = 200


class VideoError(ValueError):
    """A video that cannot be read, written or sampled; the message names the file and the fix."""

    def __init__(self, source: object, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"video {source}: {problem}")


def _name(src: Source, name: str | None) -> str:
    if name:
        return name
    if isinstance(src, bytes):
        return f"<{len(src)} bytes in memory>"
    return str(src)


def check_frames(frames: object, name: str = "<array>", require_even: bool = True) -> np.ndarray:
    """Validate an in-memory video against the contract and return it as a contiguous array."""
    if not isinstance(frames, np.ndarray):
        raise VideoError(name, f"expected a numpy uint8 array (T, H, W, 3), got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise VideoError(name, f"expected dtype uint8, got {frames.dtype} (scale to 0..255 and cast)")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoError(name, f"expected shape (T, H, W, 3), got {tuple(frames.shape)}")
    t, h, w, _ = frames.shape
    if t == 0 or h == 0 or w == 0:
        raise VideoError(name, f"empty video of shape {tuple(frames.shape)}")
    if require_even and (h % 2 or w % 2):
        raise VideoError(
            name, f"odd frame size {h}x{w}: H.264 yuv420p needs even height and width (crop or pad by one pixel)"
        )
    return np.ascontiguousarray(frames)


def read_video_fps(src: Source, name: str | None = None) -> tuple[np.ndarray, float]:
    """Decode mp4/webm/mkv (path or bytes) to ``uint8 (T, H, W, 3)`` RGB and its frame rate."""
    import av
    from av.video.reformatter import VideoReformatter

    label = _name(src, name)
    if not isinstance(src, bytes):
        path = Path(src)
        if not path.exists():
            raise VideoError(label, "file does not exist")
        if not path.is_file():
            raise VideoError(label, "is not a regular file")
        if path.stat().st_size == 0:
            raise VideoError(label, "file is empty (0 bytes)")
    elif len(src) == 0:
        raise VideoError(label, "no data (0 bytes)")
    try:
        container = av.open(io.BytesIO(src) if isinstance(src, bytes) else str(src), mode="r")
    except EOFError:
        raise VideoError(label, "ends before its first frame (zero frames, or the file was cut short)") from None
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise VideoError(
            label, f"not a readable video container ({type(e).__name__}: {e}); re-encode it as H.264 mp4"
        ) from None
    try:
        if not container.streams.video:
            raise VideoError(label, "has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        announced = int(stream.frames or 0)  # the container's frame count (0 where it has none, e.g. webm)
        frames = []
        # One reformatter for the whole clip: ``frame.to_ndarray(format=...)`` builds a new swscale
        # context per frame, which costs 5x the decode itself on small clips.
        reformatter = VideoReformatter()
        try:
            for frame in container.decode(stream):
                frames.append(reformatter.reformat(frame, format="rgb24").to_ndarray())
        except (av.FFmpegError, OSError, ValueError) as e:
            if not frames:
                raise VideoError(label, f"corrupt video data, no frame decodes ({type(e).__name__}: {e})") from None
            raise VideoError(label, f"corrupt video data after frame {len(frames)} ({type(e).__name__}: {e})") from None
    finally:
        container.close()
    if not frames:
        raise VideoError(label, "contains zero decodable frames")
    if announced and len(frames) < announced:
        raise VideoError(
            label,
            f"was cut short: {len(frames)} of the {announced} frames its header announces "
            "decode (an incomplete upload or copy?); send the whole file",
        )
    video = np.stack(frames)
    check_frames(video, label)
    if not fps or not math.isfinite(fps) or fps <= 0:
        raise VideoError(label, "has no valid frame rate in its header; re-encode with an explicit rate")
    return video, fps


def read_video(src: Source, name: str | None = None) -> np.ndarray:
    """Decode a video (path or bytes) to ``uint8 (T, H, W, 3)``; see :func:`read_video_fps`."""
    return read_video_fps(src, name)[0]


def encode_video(frames: np.ndarray, fps: float = 8.0, crf: int = 12, name: str = "<array>") -> bytes:
    """Encode ``uint8 (T, H, W, 3)`` to H.264 yuv420p mp4 bytes (``crf`` 0..51, lower is better)."""
    from fractions import Fraction

    import av

    frames = check_frames(frames, name)
    if not (fps > 0 and math.isfinite(fps)):
        raise VideoError(name, f"fps must be a positive number, got {fps}")
    buf = io.BytesIO()
    try:
        with av.open(buf, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            stream.height, stream.width = frames.shape[1], frames.shape[2]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency", "threads": "1"}
            for arr in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    except av.FFmpegError as e:
        raise VideoError(name, f"H.264 encoding failed ({type(e).__name__}: {e})") from None
    return buf.getvalue()


def write_video(path: str | Path, frames: np.ndarray, fps: float = 8.0, crf: int = 12) -> Path:
    """Write ``frames`` to ``path`` as mp4; written to a temporary name first so a failure leaves nothing."""
    path = Path(path)
    return write_encoded(path, encode_video(frames, fps=fps, crf=crf, name=str(path)))


def write_encoded(path: str | Path, data: bytes) -> Path:
    """Write already-encoded video bytes atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def _round_by(x: float, f: int) -> int:
    return round(x / f) * f


def _floor_by(x: float, f: int) -> int:
    return math.floor(x / f) * f


def _ceil_by(x: float, f: int) -> int:
    return math.ceil(x / f) * f


def smart_resize(
    height: int,
    width: int,
    factor: int = PATCH_FACTOR,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
) -> tuple[int, int]:
    """Qwen2-VL's target size: multiples of ``factor``, pixels in range, aspect ratio kept closely."""
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio of {height}x{width} exceeds {MAX_ASPECT_RATIO}")
    if min(min_pixels, max_pixels) < factor * factor:  # min > max is allowed: max wins, as in Qwen2-VL
        raise ValueError(f"need min_pixels and max_pixels >= {factor}*{factor}, got {min_pixels}, {max_pixels}")
    h = max(factor, _round_by(height, factor))
    w = max(factor, _round_by(width, factor))
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, _floor_by(height / beta, factor))
        w = max(factor, _floor_by(width / beta, factor))
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = _ceil_by(height * beta, factor)
        w = _ceil_by(width * beta, factor)
    return h, w


def sample_indices(
    num_frames: int,
    src_fps: float,
    fps: float = 2.0,
    max_frames: int = 768,
    frame_factor: int = FRAME_FACTOR,
    min_frames: int = FRAME_FACTOR,
    nframes: int = 0,
) -> np.ndarray:
    """Indices of the frames VideoAlign keeps (qwen-vl-utils' ``smart_nframes``): ``T / src_fps * fps``
    clamped to [``min_frames``, min(``max_frames``, T)] (rounded up / down to multiples of ``frame_factor``),
    then rounded to a multiple of ``frame_factor``; or ``nframes`` rounded so. At most T, evenly spaced. A
    count that is not a multiple of ``frame_factor`` (T odd) repeats the last index (the processor's padding)."""
    if num_frames < frame_factor:
        raise ValueError(f"need at least {frame_factor} frames to sample, got {num_frames}")
    if src_fps <= 0 or fps <= 0:
        raise ValueError(f"frame rates must be positive, got src_fps={src_fps}, fps={fps}")
    if nframes:
        n = _round_by(nframes, frame_factor)
    else:
        lo = _ceil_by(min_frames, frame_factor)
        hi = _floor_by(min(max_frames, num_frames), frame_factor)
        n = _round_by(min(max(num_frames / src_fps * fps, lo), hi), frame_factor)
    n = min(n, num_frames)
    if n < frame_factor:
        raise ValueError(f"frame count {n} is below {frame_factor} (num_frames / max_frames too small)")
    idx = np.linspace(0, num_frames - 1, n).round().astype(np.int64)
    pad = -n % frame_factor
    return np.concatenate([idx, np.repeat(idx[-1:], pad)]) if pad else idx


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic, antialiased resize of ``uint8 (T, H, W, 3)`` (what torchvision would do, without it)."""
    import torch
    import torch.nn.functional as F

    if frames.shape[1] == height and frames.shape[2] == width:
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def sample_for_reward(
    frames: np.ndarray,
    src_fps: float,
    fps: float = 2.0,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
    max_frames: int = 768,
    name: str = "<array>",
    factor: int = PATCH_FACTOR,
    frame_factor: int = FRAME_FACTOR,
    min_frames: int = FRAME_FACTOR,
    num_frames: int = 0,
) -> np.ndarray:
    """VideoAlign frame sampling (qwen-vl-utils' ``fetch_video``): pick frames at ``fps`` (or exactly
    ``num_frames``), resize to multiples of ``factor`` (Qwen2-VL: 28) within the pixel range. An odd frame
    count is completed by repeating the last frame, as Qwen2-VL's processor does. Resized frames are
    rounded to uint8, as torchvision's resize of the uint8 frames qwen-vl-utils reads does."""
    frames = check_frames(frames, name, require_even=False)
    try:
        idx = sample_indices(frames.shape[0], src_fps, fps, max_frames, frame_factor, min_frames, num_frames)
        h, w = smart_resize(frames.shape[1], frames.shape[2], factor, min_pixels, max_pixels)
    except ValueError as e:
        raise VideoError(name, str(e)) from None
    return resize_frames(frames[idx], h, w)
