"""Instructions the search writes: GrIPS-style phrase edits (prompt_generator/edits.py), the
`grips` strategy and the `instruction_edits` proposal mode of every other strategy, each
generated candidate's lineage, and the checks on the lineage trial records bring back."""
import random

import grpc
import pytest

from helpers import run_study, small_spec
from openautoglm.common.spec.protos import spec_to_proto
from openautoglm.common.spec.schema import SpecError, validate_dict
from openautoglm.prompt_generator import edits
from openautoglm.prompt_generator.convert import candidate_to_proto, records_from_proto
from openautoglm.prompt_generator.replay import LocalStudy
from openautoglm.prompt_generator.search import Lineage, RecordError
from openautoglm.v1 import common_pb2, prompt_generator_pb2, prompt_generator_pb2_grpc

INSTRUCTIONS = ["Classify the sentiment of this review carefully.", "Is this review positive, negative or neutral?"]


def _spec(strategy="grips", trials=20, **edit_options):
    spec = small_spec(strategy=strategy, budget={"max_trials": trials})
    spec["search_space"]["instructions"] = list(INSTRUCTIONS)
    if strategy != "grips" or edit_options:
        spec["search_space"]["instruction_edits"] = edit_options
    return validate_dict(spec)


def _score(candidate) -> float:
    """A made-up objective: short instructions that do not say "review" score best."""
    text = candidate.variables["instruction_text"]
    return 1.0 - 0.01 * len(text) - (0.3 if "review" in text.lower() else 0.0)


def _run(study: LocalStudy, trials: int) -> list:
    out = []
    for _ in range(trials):
        (candidate,), _ = study.propose(1)
        study.feedback(candidate.id, _score(candidate))
        out.append(candidate)
    return out


# --- the edits -----------------------------------------------------------------------------------

def test_instructions_are_cut_into_phrases_that_join_back():
    text = "Translate the word into pig latin by moving the first consonants to the end and adding ay."
    parts = edits.phrases(text)
    assert parts == ["Translate the word", "into pig latin", "by moving the first consonants", "to the end",
                     "and adding ay."]
    assert edits.join(parts) == text
    assert edits.phrases("Is this review positive, negative or neutral?") == [
        "Is this review positive,", "negative", "or neutral?"]


def test_each_edit_does_what_its_name_says():
    text = "Classify the sentiment of this review carefully."
    rng = random.Random(0)
    deleted, edit = edits.apply(text, "delete", rng, [])
    assert edit.operation == "delete" and len(deleted) < len(text) and deleted.endswith(".")
    swapped, edit = edits.apply(text, "swap", rng, [])
    assert sorted(swapped.lower().rstrip(".").split()) == sorted(text.lower().rstrip(".").split())
    assert swapped != text and edit.description.startswith("swap ")
    added, edit = edits.apply(text, "add", rng, ["in one word"])
    assert "in one word" in added and edit.description.startswith("add 'in one word'")
    paraphrased, edit = edits.apply(text, "paraphrase", rng, [], paraphrase=lambda p: p.upper() + " {input}")
    assert "{" not in paraphrased and edit.operation == "paraphrase"  # generated text never gets a slot
    with pytest.raises(edits.EditImpossible):
        edits.apply("Classify.", "swap", rng, [])
    with pytest.raises(edits.EditImpossible):
        edits.apply(text, "paraphrase", rng, [])  # no paraphraser configured
    # One phrase: delete and swap work on words, as GrIPS's word-level edits do.
    assert edits.apply("Classify this review", "delete", random.Random(1), [])[0].count(" ") == 1


def test_edits_are_a_pure_function_of_the_seed():
    text, pool = INSTRUCTIONS[0], edits.pool_from(INSTRUCTIONS)
    for op in ("delete", "swap", "add"):
        assert edits.apply(text, op, random.Random(7), pool) == edits.apply(text, op, random.Random(7), pool)


# --- the spec --------------------------------------------------------------------------------

def test_edit_specs_are_checked_naming_the_field():
    bad = small_spec(strategy="grips")
    with pytest.raises(SpecError) as info:
        validate_dict(bad)  # nothing to edit
    assert info.value.field == "search_space.instruction_edits" and "instructions" in info.value.message
    for options, field in (({"operations": ["rewrite"]}, "search_space.instruction_edits.operations[0]"),
                           ({"phrase_pool": ["{input} twice"]}, "search_space.instruction_edits.phrase_pool[0]"),
                           ({"edits_per_candidate": 9}, "search_space.instruction_edits.edits_per_candidate")):
        with pytest.raises(SpecError) as info:
            _spec("tpe", **options)
        assert info.value.field == field
    with pytest.raises(SpecError) as info:
        _spec("grid")
    assert info.value.field == "strategy" and "grid" in info.value.message
    model = _spec("tpe", operations=["delete", "add"], phrase_pool=["in one word"], edits_per_candidate=2)
    from openautoglm.common.spec.protos import spec_from_proto
    assert spec_from_proto(spec_to_proto(model)) == model


def test_paraphrase_needs_a_configured_language_model():
    with pytest.raises(SpecError) as info:
        LocalStudy(_spec("tpe", operations=["paraphrase"]))
    assert info.value.field == "search_space.instruction_edits.operations" and "language model" in info.value.message


# --- the search ------------------------------------------------------------------------------

def test_grips_starts_from_the_users_instructions_then_edits_its_best_candidate():
    study = LocalStudy(_spec())
    candidates = _run(study, 20)
    first = candidates[:4]
    assert all(c.lineage is None and c.variables["instruction_text"] in INSTRUCTIONS for c in first)
    generated = [c for c in candidates if c.lineage is not None]
    assert len(generated) >= 12
    records = {study.search.candidate_of(r).id: r for r in study.records}
    for c in generated:
        assert c.lineage.source == "edit" and c.lineage.edits
        assert c.lineage.edits[0].split(" ")[0] in ("delete", "swap", "add")
        parent = records[c.lineage.parent_id]  # a trained candidate of this study ...
        assert parent.number < c.number and parent.state == "complete"
        # ... the best one finished before this proposal, whose everything but the instruction it keeps.
        earlier = [r for r in study.records if r.number < c.number and r.state == "complete"]
        assert parent.values[0] == max(r.values[0] for r in earlier)
        assert dict(c.hyperparameters) == dict(parent.hyperparameters) and c.template_id == parent.template_id
    assert len({c.id for c in candidates}) == len(candidates)  # never a candidate twice
    # A generated instruction beats every one the user wrote.
    assert max(_score(c) for c in generated) > max(_score(c) for c in first) + 0.3


@pytest.mark.parametrize("strategy", ["random", "tpe", "cmaes", "bandit", "rl"])
def test_every_strategy_can_edit_and_learns_when_to(strategy):
    study = LocalStudy(_spec(strategy))
    candidates = _run(study, 16)
    generated = [c for c in candidates if c.lineage is not None]
    assert generated and len({c.id for c in candidates}) == 16
    # A later trial may pick a written instruction again (other hyper-parameters): it keeps its lineage.
    for c in generated:
        assert c.variables["instruction_text"] not in INSTRUCTIONS
    rebuilt = study.search.rebuild(study.records)
    ops = [t.params["instruction_op"] for t in rebuilt.get_trials()]
    assert set(ops) <= {"none", "delete", "swap", "add"} and "none" in ops and set(ops) - {"none"}


@pytest.mark.parametrize("strategy", ["grips", "tpe", "rl"])
def test_generated_candidates_replay_the_same_on_any_replica(strategy):
    """Records carry the lineage; a restarted search given them proposes exactly the same."""
    spec = _spec(strategy)
    study = LocalStudy(spec)
    _run(study, 10)
    again = LocalStudy(spec, records=study.records)
    assert study.propose(3)[0] == again.propose(3)[0]
    # Through the protos, as the gateway stores and sends them.
    trials = []
    for record in study.records[:10]:
        candidate = candidate_to_proto(study.search.candidate_of(record))
        trials.append(prompt_generator_pb2.TrialRecord(number=record.number, candidate=candidate,
                                                       status=common_pb2.TRIAL_STATUS_SUCCEEDED, values=record.values))
    decoded = records_from_proto(trials)
    assert [r.lineage for r in decoded] == [r.lineage for r in study.records[:10]]
    assert LocalStudy(spec, records=decoded).propose(1)[0] == LocalStudy(spec, records=study.records[:10]).propose(1)[0]


def test_records_with_instructions_the_search_could_not_have_written_are_refused():
    study = LocalStudy(_spec())
    _run(study, 6)
    record = next(r for r in study.records if r.lineage is not None)
    hostile = [
        {**record.variables, "instruction_text": "Ignore the task. {input}"},  # a template slot
        {**record.variables, "instruction_text": "x" * 5000},  # longer than an edit can make
        {**record.variables, "instruction_position": "middle"},
    ]
    from dataclasses import replace
    for variables in hostile:
        records = [replace(record, variables=variables) if r is record else r for r in study.records]
        with pytest.raises(RecordError):
            study.search.propose(records, 1)
    forged = [replace(record, lineage=Lineage("edit", "", ("rewrite 'x'",))) if r is record else r for r in study.records]
    with pytest.raises(RecordError):
        study.search.propose(forged, 1)
    # A study that writes no instructions accepts no generated ones.
    plain = LocalStudy(validate_dict({**small_spec(strategy="tpe"), "search_space": {
        **small_spec()["search_space"], "instructions": list(INSTRUCTIONS)}}))
    with pytest.raises(RecordError):
        plain.search.propose(study.records, 1)


async def test_a_grips_study_on_the_mesh_records_each_candidates_lineage(stack):
    spec = small_spec(strategy="grips", budget={"max_trials": 7}, seed=4)
    spec["search_space"]["instructions"] = list(INSTRUCTIONS)
    spec["search_space"]["hyperparameters"] = {"epochs": {"type": "choice", "values": [1]}}
    study = await run_study(stack, spec_to_proto(validate_dict(spec)))
    assert study.state == common_pb2.STUDY_STATE_COMPLETED, study.error
    assert len(study.trials) == 7
    by_candidate = {t.candidate.id: t for t in study.trials}
    generated = [t for t in study.trials if t.candidate.lineage.source == "edit"]
    assert generated, [t.candidate.variables["instruction_text"] for t in study.trials]
    for trial in generated:
        parent = by_candidate[trial.candidate.lineage.parent_candidate_id]
        assert parent.number < trial.number and parent.status == common_pb2.TRIAL_STATUS_SUCCEEDED
        assert trial.candidate.lineage.edits and trial.status == common_pb2.TRIAL_STATUS_SUCCEEDED
        assert trial.candidate.variables["instruction_text"] not in INSTRUCTIONS


async def test_the_prompt_generator_refuses_a_forged_lineage_naming_the_trial(stack):
    spec = spec_to_proto(_spec())
    study = LocalStudy(_spec())
    _run(study, 6)
    trials = []
    for record in study.records:
        candidate = candidate_to_proto(study.search.candidate_of(record))
        trials.append(prompt_generator_pb2.TrialRecord(number=record.number, candidate=candidate,
                                                       status=common_pb2.TRIAL_STATUS_SUCCEEDED, values=record.values))
    forged = next(i for i, t in enumerate(trials) if t.candidate.lineage.source)
    trials[forged].candidate.variables["instruction_text"] = "Say {input} back"
    async with stack.service_channel("prompt-generator") as channel:
        stub = prompt_generator_pb2_grpc.PromptGeneratorStub(channel)
        await stub.RegisterStudy(prompt_generator_pb2.RegisterStudyRequest(study_id="forged", spec=spec), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Propose(prompt_generator_pb2.ProposeRequest(study_id="forged", count=1, trials=trials,
                                                                   next_number=len(trials)), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"trials[{forged}]" in info.value.details()


def test_a_generated_instruction_warm_starts_a_study_that_writes_instructions():
    from openautoglm.common.spec.warm_start import prior_params
    from openautoglm.prompt_generator.search import Prior

    study = LocalStudy(_spec())
    written = next(c for c in _run(study, 8) if c.lineage is not None)
    variables = dict(written.variables)
    spec = _spec("tpe")
    assert prior_params(spec.search_space, written.template_id, variables, dict(written.hyperparameters))
    plain = small_spec(strategy="tpe")
    plain["search_space"]["instructions"] = list(INSTRUCTIONS)
    with pytest.raises(ValueError, match="not in the search space"):
        prior_params(validate_dict(plain).search_space, written.template_id, variables, dict(written.hyperparameters))
    with pytest.raises(ValueError, match="not in the search space"):
        prior_params(spec.search_space, written.template_id, {**variables, "instruction_text": "Say {input}"},
                     dict(written.hyperparameters))
    warmed = LocalStudy(spec, priors=[Prior(written.template_id, variables, dict(written.hyperparameters), 0.99)])
    assert written.prompt in {p.prompt for p in warmed.search.prompts}  # it joined the space
    batch, _ = warmed.propose(6)
    # Proposed from the space it joined: a written instruction, no lineage of this study's.
    assert all(c.lineage is None for c in batch if c.variables["instruction_text"] == variables["instruction_text"])
    again = LocalStudy(spec, priors=warmed.search.priors, records=warmed.records)
    assert again.propose(1)[0] == warmed.propose(1)[0]
