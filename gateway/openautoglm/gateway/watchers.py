"""WatchStudy's fan-out: every change of a study is put on each of its watchers' queues."""
from __future__ import annotations

import asyncio


class Watchers:
    def __init__(self) -> None:
        self._queues: dict[str, set[asyncio.Queue[str]]] = {}

    def subscribe(self, study_id: str) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._queues.setdefault(study_id, set()).add(queue)
        return queue

    def unsubscribe(self, study_id: str, queue: asyncio.Queue[str]) -> None:
        self._queues.get(study_id, set()).discard(queue)

    def notify(self, study_id: str, change: str) -> None:
        for queue in self._queues.get(study_id, ()):
            queue.put_nowait(change)
