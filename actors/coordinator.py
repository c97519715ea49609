"""The trainer group's coordinator: an async Ray actor holding per-rank task queues and per-iteration results.

Its own module, importing nothing but asyncio: Ray imports an actor's module in the actor's process, and the
trainer module's imports (torch, DeepSpeed's helpers) would cost this queue ~280 MB of resident memory.
"""

from __future__ import annotations

import asyncio

COORDINATOR_NAME = "videoalign_trainer_coordinator"


class TrainerError(RuntimeError):
    """The trainer group failed or stopped answering."""


class TrainerCoordinator:
    """Async Ray actor: per-rank task queues and per-iteration results."""

    def __init__(self, world: int):
        self.world = world
        self.queues = [asyncio.Queue() for _ in range(world)]
        self.results: dict[int, dict] = {}
        self.done: dict[int, asyncio.Event] = {}
        self.ready: set[int] = set()

    async def submit(self, tasks: list) -> None:
        if len(tasks) != self.world:
            raise TrainerError(f"{len(tasks)} tasks for {self.world} workers")
        for q, t in zip(self.queues, tasks):
            await q.put(t)

    async def next_task(self, rank: int):
        self.ready.add(rank)
        return await self.queues[rank].get()

    async def report(self, rank: int, key: int, result: dict) -> None:
        self.results.setdefault(key, {})[rank] = result
        if len(self.results[key]) == self.world:
            self.done.setdefault(key, asyncio.Event()).set()

    async def result(self, key: int, timeout_s: float) -> dict | None:
        ev = self.done.setdefault(key, asyncio.Event())
        try:
            await asyncio.wait_for(ev.wait(), timeout_s)
        except TimeoutError:
            return None
        return self.results.pop(key)

    async def n_ready(self) -> int:
        return len(self.ready)
