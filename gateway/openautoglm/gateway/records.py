"""What the prompt-generator is told of a study's trials, and when the next proposals are due.

The gateway owns every trial. A proposal for trial n is made from the results of trials
0 .. n - window - 1 only, and is made once those trials have all finished: the trials after them
are shown as in flight whatever they have become meanwhile. So what a study proposes depends on
its spec, seed and results alone, never on timing, on restarts or on which prompt-generator
replica answers; with `window` trials in flight, a trainer always has its next trial waiting.
"""
from __future__ import annotations

from collections.abc import Sequence

from openautoglm.gateway.results import is_repeat, search_trials
from openautoglm.gateway.states import IN_FLIGHT, TERMINAL_TRIAL
from openautoglm.v1 import common_pb2, prompt_generator_pb2, scheduler_pb2

S = common_pb2
# A study's window when no trainer has reported (or one created before windows existed): one
# trial training, one waiting.
DEFAULT_WINDOW = 2


def window_for(spec: common_pb2.StudySpec, workers: Sequence[scheduler_pb2.Worker] | None) -> int:
    """Trials a study keeps in flight, fixed at creation: every training place of the live
    trainers plus the job each holds waiting (or twice the study's own parallelism)."""
    if spec.budget.parallelism > 0:
        return 2 * spec.budget.parallelism
    return max(DEFAULT_WINDOW, sum(w.slots + w.queue_slots for w in workers or ()))


def window_of(study: common_pb2.Study) -> int:
    return study.window or DEFAULT_WINDOW


def proposals_due(study: common_pb2.Study) -> int:
    """How many trials may be proposed now (0: wait for a result or a free place). Once the
    final repeats are queued, the search is over: none."""
    window = window_of(study)
    trials = study.trials
    if any(is_repeat(t) for t in trials):
        return 0
    number = len(trials)
    room = min(window - sum(t.status in IN_FLIGHT for t in trials), study.spec.budget.max_trials - number)
    if room <= 0:
        return 0
    if any(t.status in IN_FLIGHT for t in trials if t.number < number - window):
        return 0  # a result the proposal must see has not arrived yet
    # Proposals that see the same results may go in one call: those before the first result counts.
    return min(room, max(1, window - number))


def record(trial: common_pb2.Trial, reveal: bool = True) -> prompt_generator_pb2.TrialRecord:
    """A trial as the search sees it; `reveal=False` shows it in flight, without results."""
    out = prompt_generator_pb2.TrialRecord(number=trial.number, candidate=trial.candidate, status=S.TRIAL_STATUS_QUEUED)
    if reveal:
        out.status = trial.status
        out.intermediate_values.update(trial.intermediate_values)
        if trial.status == S.TRIAL_STATUS_SUCCEEDED:
            out.values.extend([trial.objective_value, *trial.extra_objective_values])
    return out


def proposal_view(study: common_pb2.Study, number: int,
                  known: dict[int, prompt_generator_pb2.TrialRecord] | None = None) -> list[prompt_generator_pb2.TrialRecord]:
    """The study's trials as the proposal for trial `number` sees them. `known` keeps the records
    of finished trials the search may see, by number: they never change, so each is built once."""
    horizon = number - window_of(study)
    view = []
    for trial in search_trials(study):
        reveal = trial.number < horizon
        if known is None or not reveal or trial.status not in TERMINAL_TRIAL:
            view.append(record(trial, reveal))
            continue
        kept = known.get(trial.number)
        if kept is None:
            kept = known[trial.number] = record(trial)
        view.append(kept)
    return view


def pruning_view(study: common_pb2.Study) -> list[prompt_generator_pb2.TrialRecord]:
    """The study's trials as they stand (a pruner compares a running trial with all of them)."""
    return [record(t) for t in search_trials(study)]
