"""Weight sync: the trainer publishes a versioned LoRA blob, generators fetch the version they are told to use.

The interface is two calls, ``publish(version, state)`` and ``fetch(version)``; a receiver applies what
it fetched between two sampling batches (an actor runs one method at a time, so the swap is atomic
with respect to sampling). Every sample records the ``policy_version`` it came from.

Backend here: the Ray object store. ``publish`` serialises the adapter with safetensors (one blob,
~100 KB for rank 8 on the embedded generator) and hands it to a small store actor that ``ray.put`` s
it, so the blob is owned by the store and outlives the trainer worker that made it; the store keeps the last ``keep`` versions (one-step-off
sampling needs the previous one). Version 0, the policy the run starts from, is never published: every
receiver loads it itself (the run's ``init_adapter``, or a zero LoRA = the base) and keeps it. The blob is
the transport between trainer and generators only; adapters on disk are written in diffusers' format
(:mod:`rlhf.generator.lora`). On GPU clusters a collective
backend (NCCL broadcast from trainer rank 0 to the generators' process group) fits the same two calls;
it is not written yet.
"""

from __future__ import annotations

import hashlib
import time

STORE_NAME = "videoalign_weight_store"


class WeightSyncError(RuntimeError):
    """A version that was asked for is not (or no longer) in the store."""


def pack(state: dict) -> bytes:
    """A LoRA state dict -> one safetensors blob."""
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in state.items()})


def unpack(blob: bytes) -> dict:
    from safetensors.torch import load

    return load(blob)


class WeightStore:
    """Ray actor (see :func:`weight_store`): version -> object ref of the blob, the newest ``keep`` kept."""

    def __init__(self, keep: int = 3):
        self.keep = max(2, keep)
        self.blobs: dict[int, list] = {}  # version -> [ref] (a list, so Ray keeps the ref unresolved)
        self.meta: dict[int, dict] = {}

    def put(self, version: int, blob: bytes, meta: dict, restore: bool = False) -> int:
        """Store ``version``; versions only go up, except ``restore=True`` (a restart from a checkpoint
        puts back a version the store no longer holds)."""
        import ray

        if not restore and self.blobs and version <= max(self.blobs):
            raise WeightSyncError(f"policy version {version} is not newer than the latest {max(self.blobs)}")
        self.blobs[version] = [ray.put(blob)]  # owned by the store: outlives the publisher
        self.meta[version] = meta
        for v in sorted(self.blobs)[: -self.keep]:
            del self.blobs[v], self.meta[v]
        return version

    def get(self, version: int) -> tuple[list, dict]:
        if version not in self.blobs:
            raise WeightSyncError(
                f"policy version {version} is not in the weight store (it holds "
                f"{sorted(self.blobs)}): a receiver fell more than {self.keep - 1} versions behind"
            )
        return self.blobs[version], self.meta[version]

    def rollback(self, version: int) -> list[int]:
        """Forget every version newer than ``version`` (their trainer state was lost); returns what is left."""
        for v in [v for v in self.blobs if v > version]:
            del self.blobs[v], self.meta[v]
        return sorted(self.blobs)

    def latest(self) -> int:
        return max(self.blobs) if self.blobs else 0

    def versions(self) -> list[int]:
        return sorted(self.blobs)


def on_this_node():
    """Scheduling strategy that keeps a control actor (weight store, trainer coordinator) on the caller's
    node, i.e. the driver's. A zero-CPU actor may otherwise land on any node, and losing that node would
    lose the published weights or the trainer's queues; the driver's node going down ends the job anyway."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


def weight_store(keep: int = 3, name: str = STORE_NAME):
    """The named store actor of this Ray namespace (created if missing, restarted if it dies), on the
    caller's node."""
    import ray

    cls = ray.remote(num_cpus=0, max_restarts=-1)(WeightStore)
    return cls.options(name=name, get_if_exists=True, scheduling_strategy=on_this_node()).remote(keep)


class ObjectStoreSync:
    """Publish / fetch LoRA versions through the Ray object store (the default backend)."""

    def __init__(self, store_name: str = STORE_NAME):
        self.store_name = store_name
        self._store = None

    @property
    def store(self):
        import ray

        if self._store is None:
            self._store = ray.get_actor(self.store_name)
        return self._store

    def publish(self, version: int, state: dict, restore: bool = False) -> dict:
        """Put ``state`` as policy ``version``; returns what was published (version, bytes, sha256, seconds).
        ``restore``: put back a version older than the newest (restart from a checkpoint)."""
        import ray

        t0 = time.time()
        blob = pack(state)
        meta = {"version": int(version), "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
        ray.get(self.store.put.remote(int(version), blob, meta, restore))
        return {**meta, "seconds": time.time() - t0}

    def fetch(self, version: int) -> tuple[dict, dict]:
        """The LoRA state of ``version`` and its metadata; checks the blob against its sha256."""
        import ray

        box, meta = ray.get(self.store.get.remote(int(version)))
        blob = ray.get(box[0])
        if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
            raise WeightSyncError(f"policy version {version}: blob does not match its sha256")
        return unpack(blob), meta
