"""Experiment tracking: TensorBoard event files in every run directory, and wandb where it is set up.

``Tracker(run_dir, name, resume_step=...)`` writes scalars and clips under ``run_dir/tensorboard`` (read by
``tensorboard --logdir run_dir``) and, when ``wandb`` is installed and a project is configured (the
``wandb_project`` argument, else the ``WANDB_PROJECT`` environment variable), logs the same to wandb.

Resuming continues the same run in both: TensorBoard's ``purge_step`` drops the events a restarted run
writes again (iterations after the checkpoint are redone), and the wandb run id is kept in
``run_dir/wandb_run_id`` and resumed (``resume="allow"``). Clips are animated GIFs in TensorBoard's image
plugin (what ``SummaryWriter.add_video`` writes, without its moviepy dependency).
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import numpy as np

TB_DIR = "tensorboard"
WANDB_ID_FILE = "wandb_run_id"


def gif_bytes(frames: np.ndarray, fps: float) -> bytes:
    """(T, H, W, 3) uint8 frames -> an animated GIF that loops."""
    from PIL import Image

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"clip frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
    return buf.getvalue()


class Tracker:
    """Scalars and clips of one run, to TensorBoard always and to wandb when configured."""

    def __init__(
        self,
        run_dir: str | Path,
        name: str,
        config: dict | None = None,
        resume_step: int | None = None,
        wandb_project: str = "",
    ):
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        # purge_step: a resumed run redoes the steps after its checkpoint; their old events are dropped
        self.tb = SummaryWriter(str(self.dir / TB_DIR), purge_step=resume_step or None)
        self.wandb = None
        project = wandb_project or os.environ.get("WANDB_PROJECT", "")
        if project:
            self.wandb = self._wandb_run(project, name, config, resumed=resume_step is not None)

    def purge_from(self, step: int) -> None:
        """A restart from a checkpoint redoes ``step`` and later: TensorBoard drops their events (wandb keeps
        the first ones: it takes no step lower than one it has)."""
        from torch.utils.tensorboard import SummaryWriter

        self.tb.close()
        self.tb = SummaryWriter(str(self.dir / TB_DIR), purge_step=step)

    def _wandb_run(self, project: str, name: str, config: dict | None, resumed: bool):
        try:
            import wandb
        except ImportError:
            print(
                f"[tracking] wandb project {project!r} set but wandb is not installed: "
                "pip install -e '.[tracking]'; logging to TensorBoard only",
                flush=True,
            )
            return None
        id_file = self.dir / WANDB_ID_FILE
        if not resumed or not id_file.is_file():  # a fresh run in an old directory is a new wandb run
            id_file.write_text(uuid.uuid4().hex[:16])
        return wandb.init(
            project=project, name=name, id=id_file.read_text().strip(), resume="allow", config=config, dir=str(self.dir)
        )

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        """``values``: tag -> number ('reward/VQ', 'loss', ...); None and NaN are skipped (not a reading)."""
        clean = {k: float(v) for k, v in values.items() if v is not None and v == v}
        for tag, v in clean.items():
            self.tb.add_scalar(tag, v, step)
        if self.wandb is not None:
            self.wandb.log(clean, step=step)
        self.tb.flush()

    def clip(self, tag: str, frames: np.ndarray, fps: float, step: int) -> None:
        """One (T, H, W, 3) uint8 clip as an animated image (a side-by-side clip is one wide clip)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        t, h, w, _ = frames.shape
        gif = gif_bytes(frames, fps)
        image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=gif)
        self.tb._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
        if self.wandb is not None:  # from a file: wandb.Video of raw frames needs moviepy
            import wandb

            path = self.dir / "wandb_media" / f"{step}_{''.join(c if c.isalnum() else '_' for c in tag)}.gif"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(gif)
            self.wandb.log({tag: wandb.Video(str(path), format="gif")}, step=step)
        self.tb.flush()

    def close(self) -> None:
        self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
