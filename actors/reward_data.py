"""The reward trainer's config (``TrainRewardJob``) and the pairs each Ray Train worker reads.

Three sources: a preference dataset on disk (each worker its shard, through Ray Data), fresh moving-shapes
pairs rendered every step (``data=synthetic``), and a share of generated pairs mixed into those
(``generated_data``, ``generated_fraction``). Every stream is a function of the step and the rank alone,
so a resumed run reads exactly what the interrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rlhf.reward.train import RewardTrainConfig


@dataclass
class TrainRewardJob(RewardTrainConfig):
    resume: bool = False  # continue from the latest checkpoint in storage
    # where the workers write checkpoints, DeepSpeed state and the evaluation, and a resume reads them: a path
    # every node mounts or a URI Ray Train accepts (s3://...). "" = out (one machine, or out on a shared mount)
    storage: str = ""
    # "" = RAY_ADDRESS if set (ray job submit joins the cluster it was submitted to), else a local cluster on
    # 127.0.0.1; "auto" joins the cluster of this node
    ray_address: str = ""
    autoscaling: bool = False  # the joined cluster has an autoscaler: wait up to cluster_wait_s for the workers' nodes
    cluster_wait_s: float = 600.0  # seconds to wait for the autoscaler's nodes (autoscaling=true)
    hub_cache: str = ""  # Hugging Face cache for hub ids (HF_HUB_CACHE on every worker of the job)
    eval_data: str = ""  # dataset dir or parquet for the held-out evaluation (default: data)
    # data=synthetic only: dataset dirs (make_dataset generated.*; several: comma-separated) whose train-split
    # pairs fill generated_fraction of every batch, the rest being fresh rendered pairs
    generated_data: str = ""
    generated_fraction: float = 0.5  # share of every batch taken from generated_data's pairs (0 < share <= 1)
    grammar: str = "single"  # data=synthetic: prompts of the fresh rendered pairs (single | pair | mixed)
    pair_share: float = 0.5  # data=synthetic, grammar=mixed: share of the rendered pairs drawn from pair prompts
    contrast_prob: float = 0.0  # data=synthetic: share of rendered pairs that differ in one TA defect alone
    # fine-tune a trained reward model (checkpoint dir or hub id) instead of building one from random weights;
    # its backbone, tokens, frame sampling and trainable parts are kept
    init_from: str = ""
    norm_pairs: int = 256  # training pairs whose rewards give the normalisation constants (inference_config)

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.generated_fraction <= 1.0:
            raise ValueError(f"generated_fraction must be in (0, 1], got {self.generated_fraction}")
        from rlhf.synthetic.dataset import PairSampling
        from rlhf.synthetic.prompts import check_grammar

        check_grammar(self.grammar)
        PairSampling(grammar=self.grammar, pair_share=self.pair_share, contrast_prob=self.contrast_prob).validate()


REPORT_EVERY = 10  # ray.train.report synchronises every worker with the controller: not every step
SYNTHETIC = "synthetic"  # data=synthetic: fresh moving-shapes pairs (train prompts only) every step


def parquet_path(data: str) -> Path:
    p = Path(data)
    return p / "prefs.parquet" if p.is_dir() else p


def video_root(cfg, data: str) -> Path:
    return Path(cfg.root) if cfg.root and data == cfg.data else parquet_path(data).parent


def generated_dirs(cfg) -> list[str]:
    """The ``generated_data`` dataset dirs (comma-separated), in order."""
    return [d.strip() for d in cfg.generated_data.split(",") if d.strip()]


def generated_records(cfg) -> list[dict]:
    """Train-split pairs of every ``generated_data`` dir, in order, with absolute video paths."""
    out = []
    for data in generated_dirs(cfg):
        root = video_root(cfg, data)
        recs = split_records(data, cfg.train_split)
        if not recs:
            raise ValueError(f"generated_data {data} has no pairs in split {cfg.train_split!r}")
        out += [{**r, "video_a": str(root / r["video_a"]), "video_b": str(root / r["video_b"])} for r in recs]
    return out


def split_records(data: str, split: str) -> list[dict]:
    from rlhf.data.schema import read_preferences

    return [r for r in read_preferences(parquet_path(data)).to_pylist() if r["split"] == split]


def file_batches(cfg, shard, processor, start_epoch: int, start_batch: int):
    """(next data position, batch) over the worker's Ray Data shard of the training pairs."""
    from rlhf.reward.data import build_batch

    root = video_root(cfg, cfg.data)
    for epoch in range(start_epoch, cfg.epochs):
        it = shard.iter_batches(
            batch_size=cfg.batch_size,
            batch_format="pyarrow",
            local_shuffle_buffer_size=4 * cfg.batch_size,
            local_shuffle_seed=cfg.seed + epoch,
        )
        for bi, table in enumerate(it):
            if epoch == start_epoch and bi < start_batch:
                continue  # data position of a resumed run
            yield (epoch, bi + 1), build_batch(table.to_pylist(), root, processor)


def generated_share(cfg) -> int:
    """Pairs of every batch that come from ``generated_data`` (the rest are fresh rendered pairs)."""
    return max(1, round(cfg.generated_fraction * cfg.batch_size)) if cfg.generated_data else 0


def generated_pairs(cfg, rank: int, world: int, step: int, records: list[dict]) -> list[dict]:
    """The generated pairs of ``step`` on ``rank``: position ``p`` of the stream is record
    ``perm_e[p mod N]`` with ``perm_e`` a permutation of the N records seeded by ``(seed, e)``, ``e = p div N``:
    every record once per pass, a function of the step alone (a resumed run continues the same stream)."""
    import numpy as np

    n, out = generated_share(cfg), []
    for j in range(n):
        p = (step * world + rank) * n + j
        perm = np.random.default_rng([cfg.seed, 0x6E4, p // len(records)]).permutation(len(records))
        out.append(records[int(perm[p % len(records)])])
    return out


def synthetic_batches(cfg, processor, rank: int, world: int, start_step: int):
    """(next data position, batch) of fresh pairs, plus the ``generated_data`` share; pair indices follow
    the step, so a resumed run continues the same stream."""
    from rlhf.reward.data import batch_from_frames
    from rlhf.synthetic.annotator import AnnotatorConfig
    from rlhf.synthetic.dataset import PairSampling, labelled_pair, pair_spec
    from rlhf.synthetic.render import RenderSpec
    from rlhf.video import read_video_fps

    sampling = PairSampling(
        heldout_fraction=0.0, grammar=cfg.grammar, pair_share=cfg.pair_share, contrast_prob=cfg.contrast_prob
    )
    spec, annotator = RenderSpec(), AnnotatorConfig()
    generated = generated_records(cfg) if cfg.generated_data else []
    step = start_step
    while True:
        recs, fa, fb, fps_a, fps_b = [], [], [], [], []
        for rec in generated_pairs(cfg, rank, world, step, generated) if generated else []:
            (va, ra), (vb, rb) = read_video_fps(rec["video_a"]), read_video_fps(rec["video_b"])
            recs.append(rec)
            fa.append(va)
            fb.append(vb)
            fps_a.append(ra)
            fps_b.append(rb)
        rendered = cfg.batch_size - len(recs)
        for j in range(rendered):
            index = (step * world + rank) * cfg.batch_size + j
            rec, _, frames = labelled_pair(pair_spec(cfg.seed, index, sampling), cfg.seed, spec, annotator, 12)
            recs.append(rec)
            fa.append(frames["a"])
            fb.append(frames["b"])
            fps_a.append(spec.fps)
            fps_b.append(spec.fps)
        step += 1
        yield (0, step), batch_from_frames(recs, fa, fb, fps_a, fps_b, processor)
