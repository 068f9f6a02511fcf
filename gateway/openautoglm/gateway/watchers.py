"""WatchStudy's fan-out: every change of a study is put on each of its watchers' queues, with
the trial it concerns (empty for a change of the study itself), so a watcher that asked for
changes only can send just those trials."""
from __future__ import annotations

import asyncio

# (what changed, the trial id or "")
Change = tuple[str, str]


class Watchers:
    def __init__(self) -> None:
        self._queues: dict[str, set[asyncio.Queue[Change]]] = {}

    def subscribe(self, study_id: str) -> asyncio.Queue[Change]:
        queue: asyncio.Queue[Change] = asyncio.Queue()
        self._queues.setdefault(study_id, set()).add(queue)
        return queue

    def unsubscribe(self, study_id: str, queue: asyncio.Queue[Change]) -> None:
        watching = self._queues.get(study_id)
        if watching is not None:
            watching.discard(queue)
            if not watching:
                del self._queues[study_id]

    def notify(self, study_id: str, change: str, trial_id: str = "") -> None:
        for queue in self._queues.get(study_id, ()):
            queue.put_nowait((change, trial_id))
