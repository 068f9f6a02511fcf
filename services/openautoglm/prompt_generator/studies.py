"""The studies registered with the prompt-generator. A registration (a study's spec and its
warm-start results) is written once, to storage every replica shares (an optuna RDB storage:
SQLite under the data dir by default, PostgreSQL for replicas on several machines), and each
replica keeps the searches it has built from them in memory. No trial state lives here: every
question carries the study's trials from the gateway. No gRPC here."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.study import StudyDirection
from sqlalchemy.exc import SQLAlchemyError

from openautoglm.common.spec.schema import SpecError, StudySpecModel, validate_dict
from openautoglm.common.spec.warm_start import prior_params
from openautoglm.prompt_generator.prompts import RenderCache
from openautoglm.prompt_generator.search import Prior, ProposedCandidate, StudySearch, TrialRecord
from openautoglm.prompt_generator.writer import InstructionWriter

log = logging.getLogger(__name__)
# Searches a replica keeps built (least recently used forgotten first; rebuilt from storage).
MAX_STUDIES = 1024
SPEC_ATTR, PRIORS_ATTR = "spec", "priors"


class UnknownStudy(KeyError):
    """The study was never registered (or its storage was reset): register it again."""


class Registrations:
    """Registered studies in shared storage: an optuna study per registration, its spec and
    priors as user attributes (optuna's own schema, so any SQLAlchemy database works)."""

    def __init__(self, url: str | None):
        self._storage: optuna.storages.BaseStorage = _open(url) if url else optuna.storages.InMemoryStorage()

    def save(self, study_id: str, spec: StudySpecModel, priors: Sequence[Prior]) -> None:
        try:
            key = self._storage.create_new_study([StudyDirection.MAXIMIZE], study_id)
        except DuplicatedStudyError:
            key = self._storage.get_study_id_from_name(study_id)
        self._storage.set_study_user_attr(key, SPEC_ATTR, spec.model_dump(mode="json"))
        self._storage.set_study_user_attr(key, PRIORS_ATTR, [asdict(p) for p in priors])

    def load(self, study_id: str) -> tuple[StudySpecModel, list[Prior]] | None:
        try:
            key = self._storage.get_study_id_from_name(study_id)
        except KeyError:
            return None
        attrs: dict[str, Any] = self._storage.get_study_user_attrs(key)
        if SPEC_ATTR not in attrs:
            return None
        priors = [Prior(p["template_id"], p["variables"], p["hyperparameters"], p["value"]) for p in attrs.get(PRIORS_ATTR, [])]
        return validate_dict(attrs[SPEC_ATTR]), priors


def _open(url: str, attempts: int = 10) -> optuna.storages.RDBStorage:
    """The shared storage; replicas starting together may race to create its tables: try again."""
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


class StudyRegistry:
    def __init__(self, storage_url: str | None = None, writer: InstructionWriter | None = None,
                 read_roots: Sequence[Path] | None = None) -> None:
        self.cache = RenderCache()
        self.writer = writer  # the language model that writes instructions, if one is configured
        self.read_roots = read_roots  # where a study's dataset path may point (its examples feed the writer)
        self.registrations = Registrations(storage_url)
        self._studies: dict[str, StudySearch] = {}
        self._lock = threading.Lock()

    def register(self, study_id: str, spec: StudySpecModel, priors: Sequence[Prior]) -> StudySearch:
        """Set the study's search up (again) and store its registration."""
        search = self.check(spec, priors)
        self.registrations.save(study_id, spec, priors)
        return self._keep(study_id, search)

    def check(self, spec: StudySpecModel, priors: Sequence[Prior]) -> StudySearch:
        """The study's search, built as registration builds it and kept nowhere: raises
        SpecError for a prior outside the space or a space this replica cannot search."""
        for i, prior in enumerate(priors):
            try:
                prior_params(spec.search_space, prior.template_id, dict(prior.variables), dict(prior.hyperparameters))
            except ValueError as err:
                raise SpecError(f"prior_trials[{i}]", str(err)) from None
        return self._search(spec, priors)

    def search(self, study_id: str) -> StudySearch:
        """The study's search: built already, or rebuilt from its stored registration."""
        with self._lock:
            search = self._studies.get(study_id)
            if search is not None:
                self._studies[study_id] = self._studies.pop(study_id)  # most recently used last
                return search
        stored = self.registrations.load(study_id)
        if stored is None:
            raise UnknownStudy(study_id)
        log.info("study %s set up from its stored registration", study_id, extra={"study_id": study_id})
        return self._keep(study_id, self._search(stored[0], stored[1]))

    def _search(self, spec: StudySpecModel, priors: Sequence[Prior]) -> StudySearch:
        return StudySearch(spec, self.cache, priors, self.writer, self.read_roots)

    def _keep(self, study_id: str, search: StudySearch) -> StudySearch:
        with self._lock:
            self._studies.pop(study_id, None)
            self._studies[study_id] = search
            while len(self._studies) > MAX_STUDIES:
                self._studies.pop(next(iter(self._studies)))
        return search

    async def propose(self, study_id: str, records: Sequence[TrialRecord], count: int,
                      next_number: int) -> tuple[list[ProposedCandidate], bool]:
        search = await asyncio.to_thread(self.search, study_id)
        return await asyncio.to_thread(search.propose, records, count, next_number)

    async def should_prune(self, study_id: str, records: Sequence[TrialRecord], number: int,
                           step: int) -> tuple[bool, dict[str, Any]]:
        search = await asyncio.to_thread(self.search, study_id)
        return await asyncio.to_thread(search.should_prune, records, number, step)
