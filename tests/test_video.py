"""Video I/O, VideoAlign frame sampling, and one clear error for every bad file."""

import math

import av
import numpy as np
import pytest

from rlhf.video import (
    VideoError,
    encode_video,
    read_video,
    read_video_fps,
    sample_for_reward,
    sample_indices,
    smart_resize,
    write_video,
)


def smooth_video(t=8, h=32, w=48):
    """A smooth gradient video: H.264 reproduces it closely, so round trips can be checked."""
    y, x = np.mgrid[0:h, 0:w]
    frames = [np.stack([(x * 4 + 8 * i) % 256, (y * 6) % 256, np.full_like(x, 100 + 10 * i)], -1) for i in range(t)]
    return np.stack(frames).astype(np.uint8)


def pyav_file(path, fmt, codec, frames, pix_fmt, rate=8):
    """Write a file with PyAV directly (not through the code under test)."""
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.height, s.width = frames.shape[1], frames.shape[2]
        s.pix_fmt = pix_fmt
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_mp4_round_trip_shape_fps_and_values(tmp_path):
    v = smooth_video()
    path = write_video(tmp_path / "a.mp4", v, fps=8.0, crf=0)
    out, fps = read_video_fps(path)
    assert out.dtype == np.uint8 and out.shape == v.shape
    assert fps == 8.0
    assert np.abs(out.astype(int) - v.astype(int)).mean() < 3.0
    with av.open(str(path)) as c:  # the file is H.264 yuv420p, as the contract says
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"


def test_bytes_in_memory_round_trip():
    v = smooth_video(t=4)
    assert read_video(encode_video(v, fps=4.0)).shape == v.shape


@pytest.mark.parametrize("fmt,codec,pix", [("webm", "libvpx-vp9", "yuv420p"), ("matroska", "ffv1", "yuv444p")])
def test_decodes_webm_and_mkv(tmp_path, fmt, codec, pix):
    v = smooth_video(t=6)
    path = pyav_file(tmp_path / f"v.{'webm' if fmt == 'webm' else 'mkv'}", fmt, codec, v, pix)
    out = read_video(path)
    assert out.shape == v.shape
    assert np.abs(out.astype(int) - v.astype(int)).mean() < 6.0


def test_missing_empty_and_directory(tmp_path):
    with pytest.raises(VideoError, match=r"nope\.mp4: file does not exist"):
        read_video(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match=r"empty\.mp4: file is empty"):
        read_video(tmp_path / "empty.mp4")
    with pytest.raises(VideoError, match="not a regular file"):
        read_video(tmp_path)


def test_corrupt_and_truncated_mp4(tmp_path):
    good = encode_video(smooth_video())
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (tmp_path / "trunc.mp4").write_bytes(good[: len(good) // 3])
    for name in ("garbage.mp4", "trunc.mp4"):
        with pytest.raises(VideoError) as e:
            read_video(tmp_path / name)
        assert name in str(e.value)


def test_zero_frame_container(tmp_path):
    path = tmp_path / "zero.mkv"
    with av.open(str(path), "w", format="matroska") as c:  # a header and a video stream, no frame
        s = c.add_stream("ffv1", rate=8)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv444p"
        c.start_encoding()
    assert path.stat().st_size > 0
    with pytest.raises(VideoError, match="zero.mkv: ends before its first frame"):
        read_video(path)


def test_audio_only_file(tmp_path):
    path = tmp_path / "audio.mkv"
    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in list(s.encode(frame)) + list(s.encode()):
            c.mux(p)
    with pytest.raises(VideoError, match="audio.mkv: has no video stream"):
        read_video(path)


def test_odd_sized_file_and_array(tmp_path):
    odd = np.zeros((4, 33, 31, 3), np.uint8)
    path = pyav_file(tmp_path / "odd.mkv", "matroska", "ffv1", odd, "yuv444p")
    with pytest.raises(VideoError, match="odd.mkv: odd frame size 33x31"):
        read_video(path)
    with pytest.raises(VideoError, match="odd frame size"):
        encode_video(odd)


def test_bad_arrays_are_named():
    with pytest.raises(VideoError, match="dtype uint8"):
        encode_video(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(VideoError, match=r"shape \(T, H, W, 3\)"):
        encode_video(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(VideoError, match="empty video"):
        encode_video(np.zeros((0, 8, 8, 3), np.uint8))


def test_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(VideoError):
        write_video(tmp_path / "x.mp4", np.zeros((2, 9, 9, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_smart_resize_by_hand():
    # 480x832: rounds to 476x840 = 399,840 px > 448*448 = 200,704, so beta = sqrt(480*832/200704)
    # = 1.4106; 480/beta = 340.3 -> floor to 336, 832/beta = 589.8 -> 588.
    assert smart_resize(480, 832) == (336, 588)
    # 32x32 with min 56*56: rounds to 28x28 = 784 < 3136, beta = sqrt(3136/1024) = 1.75 -> 56x56.
    assert smart_resize(32, 32, min_pixels=56 * 56, max_pixels=448 * 448) == (56, 56)
    # Already inside the range and on the grid: unchanged.
    assert smart_resize(224, 336, min_pixels=28 * 28, max_pixels=448 * 448) == (224, 336)


@pytest.mark.parametrize("h,w", [(32, 32), (480, 832), (1080, 1920), (720, 1280), (100, 700), (64, 48), (300, 2000)])
def test_smart_resize_bounds_and_aspect(h, w):
    lo, hi = 128 * 28 * 28, 448 * 448
    rh, rw = smart_resize(h, w, min_pixels=lo, max_pixels=hi)
    assert rh % 28 == 0 and rw % 28 == 0
    assert lo <= rh * rw <= hi
    assert abs(math.log((rh / rw) / (h / w))) < 0.35


def test_sample_indices_by_hand():
    # 96 frames at 24 fps = 4 s; at 2 fps -> 8 frames, evenly spaced over 0..95.
    assert sample_indices(96, 24.0, 2.0).tolist() == [0, 14, 27, 41, 54, 68, 81, 95]
    # 8 frames at 8 fps = 1 s -> 2 frames at 2 fps (the minimum).
    assert sample_indices(8, 8.0, 2.0).tolist() == [0, 7]
    # 7 frames at 1 fps asked at 8 fps: capped by the frame count, floored to even -> 6.
    assert len(sample_indices(7, 1.0, 8.0)) == 6
    with pytest.raises(ValueError, match="at least 2 frames"):
        sample_indices(1, 8.0)


def test_sample_for_reward_output():
    v = smooth_video(t=8, h=32, w=48)
    out = sample_for_reward(v, src_fps=8.0, fps=8.0, min_pixels=56 * 56, max_pixels=448 * 448)
    assert out.dtype == np.uint8 and out.shape[0] == 8 and out.shape[1] % 28 == 0 and out.shape[2] % 28 == 0
    assert 56 * 56 <= out.shape[1] * out.shape[2] <= 448 * 448
    # a constant video stays constant through the antialiased bicubic resize
    flat = np.full((4, 32, 32, 3), 77, np.uint8)
    assert np.all(sample_for_reward(flat, 4.0, 2.0, min_pixels=56 * 56) == 77)
    with pytest.raises(VideoError, match="at least 2 frames"):
        sample_for_reward(v[:1], 8.0)


def test_clip_cut_at_a_packet_boundary_is_refused(tmp_path):
    """An mp4 with its index first (faststart) cut exactly before its last packets demuxes and decodes
    without any error, only with fewer frames than the header announces: refused, not scored short."""
    import av

    from rlhf.synthetic.render import render
    from rlhf.video import VideoError, read_video_fps

    clip = render("a red circle moving left slowly on a black background", seed=1)
    path, sizes = tmp_path / "fast.mp4", []
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = clip.shape[2], clip.shape[1], "yuv420p"
        for f in clip:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                sizes.append(p.size)
                c.mux(p)
        for p in s.encode():
            sizes.append(p.size)
            c.mux(p)
    data = path.read_bytes()
    assert read_video_fps(data)[0].shape[0] == len(clip) == len(sizes)
    for k in (1, 2):  # the file minus its last k packets (the mdat ends the file)
        with pytest.raises(VideoError, match=f"cut short: {len(clip) - k} of the {len(clip)} frames"):
            read_video_fps(data[: len(data) - sum(sizes[-k:])])
