"""Instructions a language model writes (prompt_generator/writer.py): APE from train examples,
OPRO from the scored instructions so far, paraphrase edits. The model is the suite's own small
causal LM (helpers.build_instruction_model), a real Hugging Face directory loaded and sampled
the way a Qwen or GLM checkpoint would be."""
import asyncio
import time

import pytest

from helpers import run_study, small_spec
from openautoglm.common import datasets
from openautoglm.common.datasets import Example
from openautoglm.common.spec.protos import spec_from_proto, spec_to_proto
from openautoglm.common.spec.schema import SpecError, validate_dict
from openautoglm.common.spec.templates import is_clean_instruction
from openautoglm.common.text_generation import LocalGenerator
from openautoglm.prompt_generator.replay import LocalStudy
from openautoglm.prompt_generator.writer import InstructionWriter, WriterError, first_instruction
from openautoglm.v1 import common_pb2

INSTRUCTIONS = ["Classify the sentiment of this review.", "Is this review positive, negative or neutral?"]
EXAMPLES = [Example("the movie was great", "positive"), Example("awful food", "negative")]


@pytest.fixture(scope="module")
def writer(instruction_model):
    return InstructionWriter.local(instruction_model, seconds=30)


def _spec(strategy="tpe", trials=16, **writer_options):
    spec = small_spec(strategy=strategy, budget={"max_trials": trials})
    spec["search_space"]["instructions"] = list(INSTRUCTIONS)
    spec["search_space"]["instruction_writer"] = writer_options
    return validate_dict(spec)


def _score(candidate) -> float:
    text = candidate.variables["instruction_text"]
    return 1.0 - 0.01 * len(text) + (0.2 if "review" in text.lower() else 0.0)


def test_the_model_writes_clean_instructions_the_same_for_the_same_seed(writer):
    for text in (writer.ape(EXAMPLES, 1), writer.opro([(INSTRUCTIONS[0], 0.9), (INSTRUCTIONS[1], 0.1)], EXAMPLES, 2),
                 writer.paraphrase("of this review", 3)):
        assert text and is_clean_instruction(text) and "\n" not in text and text[0].isupper()
    before = writer.generations
    assert writer.ape(EXAMPLES, 1) == writer.ape(EXAMPLES, 1)  # cached: the model is not asked again
    assert writer.generations == before
    fresh = InstructionWriter.local(writer.generator.model_dir)  # another replica: the same answer from the seed alone
    assert fresh.ape(EXAMPLES, 1) == writer.ape(EXAMPLES, 1)
    assert len({writer.ape(EXAMPLES, seed) for seed in range(8)}) > 1  # sampled, not one fixed string


def test_what_the_model_says_is_cut_to_one_safe_instruction():
    assert first_instruction('\n  "Instruction: Say {input} twice."\nmore text') == "Say input twice."
    assert first_instruction("\n\n") == ""
    with pytest.raises(WriterError, match="no config.json"):
        InstructionWriter.local("/nowhere")


def test_writer_specs_are_checked_and_need_a_configured_model():
    model = _spec(methods=["opro"], examples=3)
    assert spec_from_proto(spec_to_proto(model)) == model
    with pytest.raises(SpecError) as info:
        _spec(methods=["dream"])
    assert info.value.field == "search_space.instruction_writer.methods[0]"
    with pytest.raises(SpecError) as info:
        LocalStudy(model)  # no model configured for this prompt-generator
    assert info.value.field == "search_space.instruction_writer" and "OPENAUTOGLM_PROMPT_MODEL" in info.value.message


class _Spy(InstructionWriter):
    """The real writer, recording the examples and histories each meta-prompt showed."""

    def __init__(self, model_dir):
        super().__init__(LocalGenerator(model_dir, seconds=30))
        self.shown: list[Example] = []
        self.histories: list[list[tuple[str, float]]] = []

    def ape(self, examples, seed):
        self.shown += examples
        return super().ape(examples, seed)

    def opro(self, scored, examples, seed):
        self.shown += examples
        self.histories.append(list(scored))
        return super().opro(scored, examples, seed)


def test_a_search_writes_instructions_with_ape_and_opro_from_train_examples_only(instruction_model):
    spy = _Spy(instruction_model)
    spec = _spec()
    study = LocalStudy(spec, writer=spy)
    candidates = []
    for _ in range(16):
        (c,), _ = study.propose(1)
        study.feedback(c.id, _score(c))
        candidates.append(c)
    sources = {c.lineage.source for c in candidates if c.lineage}
    assert sources == {"ape", "opro"}, [c.lineage for c in candidates]
    by_id = {study.search.candidate_of(r).id: r for r in study.records}
    for c in candidates:
        if c.lineage and c.lineage.source == "opro":
            assert by_id[c.lineage.parent_id].state == "complete"  # rewritten from a scored one
        if c.lineage:
            assert c.variables["instruction_text"] not in INSTRUCTIONS and c.lineage.edits
    splits = datasets.load_splits("sentiment-demo", "", "classification", max_examples=200, seed=spec.seed,
                                  test_fraction=0.2)
    assert spy.shown and set(spy.shown) <= set(splits.train)  # never a validation or test example
    assert all(0.0 <= score <= 1.0 for history in spy.histories for _, score in history)
    assert any(len(history) >= 2 for history in spy.histories)
    # A restarted replica given the records proposes the same (the seed makes the sample).
    again = LocalStudy(spec, records=study.records, writer=InstructionWriter.local(instruction_model))
    assert again.propose(2)[0] == study.propose(2)[0]


def test_paraphrase_edits_use_the_model(writer):
    spec = small_spec(strategy="grips", budget={"max_trials": 14})
    spec["search_space"]["instructions"] = list(INSTRUCTIONS)
    spec["search_space"]["instruction_edits"] = {"operations": ["paraphrase"]}
    study = LocalStudy(validate_dict(spec), writer=writer)
    paraphrased = []
    for _ in range(14):
        (c,), _ = study.propose(1)
        study.feedback(c.id, _score(c))
        if c.lineage:
            paraphrased.append(c)
    assert paraphrased and all(c.lineage.edits[0].startswith("paraphrase ") for c in paraphrased)


async def test_a_study_on_the_mesh_trains_and_scores_instructions_its_model_wrote(stack, otlp_receiver):
    """The session stack's prompt-generator runs with OPENAUTOGLM_PROMPT_MODEL_ON=trainer: the
    instructions are generated by the model the trainer hosts (PromptModel.Complete)."""
    spec = small_spec(strategy="random", budget={"max_trials": 8}, seed=2)
    spec["search_space"]["instructions"] = list(INSTRUCTIONS)
    spec["search_space"]["instruction_writer"] = {"methods": ["ape", "opro"], "examples": 4}
    spec["search_space"]["hyperparameters"] = {"epochs": {"type": "choice", "values": [1]}}
    study = await run_study(stack, spec_to_proto(validate_dict(spec)))
    assert study.state == common_pb2.STUDY_STATE_COMPLETED, study.error
    written = [t for t in study.trials if t.candidate.lineage.source in ("ape", "opro")]
    assert written, [t.candidate.variables["instruction_text"] for t in study.trials]
    for trial in written:
        assert trial.status == common_pb2.TRIAL_STATUS_SUCCEEDED and "accuracy" in trial.metrics
        assert trial.candidate.prompt.startswith(trial.candidate.variables["instruction_text"])
    # Generated on the trainer, inside the study's trace.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _trainer_completions(otlp_receiver, study.trace_id):
        await asyncio.sleep(0.3)
    assert _trainer_completions(otlp_receiver, study.trace_id)


def _trainer_completions(otlp_receiver, trace_id: str) -> list[dict]:
    return [s for s in otlp_receiver.for_trace(trace_id)
            if s["service"] == "trainer" and s["name"] == "/openautoglm.v1.PromptModel/Complete"]
