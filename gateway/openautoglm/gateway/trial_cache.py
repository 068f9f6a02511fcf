"""A running study's trials as its driver reads them, at a cost that does not grow with the study.

The driver looks at its study after every trial event. Reading all of a 1,000-trial study's
trials each time would make every event cost O(trials), the whole study O(trials^2). But a
finished trial never changes again (the store refuses to write one), and trials are numbered
densely from 0. So the trials before the first unfinished one are read once and kept; each look
reads only from there on: about the trials in flight.

What the prompt-generator is shown of a finished, revealed trial (records.record) is fixed too,
so those records are kept beside the trials.
"""
from __future__ import annotations

from openautoglm.gateway.states import TERMINAL_TRIAL
from openautoglm.gateway.store import StudyStore, count_held_trials
from openautoglm.v1 import common_pb2, prompt_generator_pb2


class StudyTrialCache:
    """One study's finished prefix of trials, kept by its driver for as long as it drives."""

    def __init__(self, store: StudyStore, study_id: str) -> None:
        self.store = store
        self.study_id = study_id
        self._finished: list[common_pb2.Trial] = []  # trials 0 .. k-1, all finished
        # The search's view of finished trials it may see (records.record(t, reveal=True)), by number.
        self.records: dict[int, prompt_generator_pb2.TrialRecord] = {}

    def study(self) -> common_pb2.Study:
        """The study with all its trials, as the store has them now; KeyError if there is none."""
        study = self.store.header(self.study_id)
        if study is None:
            raise KeyError(f"no study {self.study_id!r} in the store")
        rest = self.store.trials_page(self.study_id, len(self._finished), None)
        done = 0
        for trial in rest:
            if trial.status not in TERMINAL_TRIAL or trial.number != len(self._finished):
                break
            self._finished.append(trial)
            done += 1
        study.trials.extend(self._finished)
        study.trials.extend(rest[done:])
        count_held_trials(study)
        return study
