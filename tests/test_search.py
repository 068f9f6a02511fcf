"""The prompt-generator's search core: rendering, strategies, de-duplication, feedback.

The search keeps no trial state: `LocalStudy` keeps the records the way the gateway does, and a
"restarted" search is a new one given the same records.
"""
import math

import numpy as np
import pytest

from helpers import small_spec
from openautoglm.common.spec.schema import validate_dict
from openautoglm.prompt_generator.prompts import RenderCache, render_all
from openautoglm.prompt_generator.replay import LocalStudy
from openautoglm.prompt_generator.search import Prior, StudySearch, TrialRecord


def test_render_is_a_cartesian_product_over_used_variables_only():
    cache = RenderCache()
    prompts = render_all(
        [("a", "{tone} {length}: {input}"), ("b", "{tone} {input}")],
        {"tone": ["calm", "curt"], "length": ["short", "long", "medium"]},
        "tiny", cache,
    )
    assert len(prompts) == 2 * 3 + 2  # template b ignores `length`: no duplicates from it
    assert {p.prompt for p in prompts if p.template_id == "b"} == {"calm {input}", "curt {input}"}
    assert cache.hits == 0 and cache.lookups == 8
    render_all([("b", "{tone} {input}")], {"tone": ["calm", "curt"]}, "tiny", cache)
    assert cache.hits == 2
    render_all([("b", "{tone} {input}")], {"tone": ["calm"]}, "other-model", cache)
    assert cache.hits == 2  # another model version is another cache key


def _search(tmp_path, strategy="grid", max_trials=4, records=(), **overrides):
    spec = validate_dict(small_spec(strategy=strategy, budget={"max_trials": max_trials}, **overrides))
    return LocalStudy(spec, records=records)


def test_grid_covers_the_space_once_then_reports_exhausted(tmp_path):
    search = _search(tmp_path)
    assert search.search.space_size == 4
    first, exhausted = search.propose(3)
    assert len(first) == 3 and not exhausted
    rest, exhausted = search.propose(3)
    assert len(rest) == 1 and exhausted
    ids = [c.id for c in first + rest]
    assert len(set(ids)) == 4
    combos = {(c.template_id, c.hyperparameters["epochs"]) for c in first + rest}
    assert combos == {("plain", 1), ("plain", 2), ("asked", 1), ("asked", 2)}


@pytest.mark.parametrize("strategy", ["random", "tpe", "cmaes", "bandit", "rl"])
def test_adaptive_strategies_never_repeat_a_candidate(tmp_path, strategy):
    search = _search(tmp_path, strategy=strategy)
    seen = []
    for _ in range(6):
        batch, exhausted = search.propose(1)
        for c in batch:
            search.feedback(c.id, float(c.hyperparameters["epochs"]))
        seen += [c.id for c in batch]
        if exhausted:
            break
    assert len(seen) == len(set(seen)) == 4


def test_tpe_learns_from_feedback(tmp_path):
    spec = small_spec(strategy="tpe", budget={"max_trials": 30})
    spec["search_space"]["hyperparameters"] = {"learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1.0}}
    search = LocalStudy(validate_dict(spec))
    values = []
    for _ in range(30):
        (c,), _ = search.propose(1)
        lr = c.hyperparameters["learning_rate"]
        score = -abs(__import__("math").log10(lr) + 2)  # best at 1e-2
        search.feedback(c.id, score)
        values.append(score)
    assert sum(values[-10:]) / 10 > sum(values[:10]) / 10


def test_feedback_is_idempotent_and_survives_a_restart(tmp_path):
    search = _search(tmp_path)
    (c,), _ = search.propose(1)
    assert search.feedback(c.id, 0.7) is True
    assert search.feedback(c.id, 0.7) is False
    with pytest.raises(KeyError):
        search.feedback("nope", 1.0)
    reloaded = _search(tmp_path, records=search.records)  # a restarted replica, given the gateway's records
    assert reloaded.feedback(c.id, 0.7) is False
    more, _ = reloaded.propose(4)
    assert c.id not in {m.id for m in more} and len(more) == 3


def _learning_curve(tmp_path, strategy, trials=40, seed=0):
    """Mean score of the first and last 10 trials on a space where lr=1e-2 and template 'asked' win."""

    spec = small_spec(strategy=strategy, budget={"max_trials": trials}, seed=seed)
    spec["search_space"]["hyperparameters"] = {
        "learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1.0},
        "epochs": {"type": "int", "low": 1, "high": 8},
    }
    search = LocalStudy(validate_dict(spec))
    scores = []
    for _ in range(trials):
        batch, exhausted = search.propose(1)
        if not batch:
            break
        c = batch[0]
        score = (-abs(math.log10(c.hyperparameters["learning_rate"]) + 2) - 0.1 * abs(c.hyperparameters["epochs"] - 6)
                 + (1.0 if c.template_id == "asked" else 0.0))
        search.feedback(c.id, score)
        scores.append(score)
    return sum(scores[:10]) / 10, sum(scores[-10:]) / 10


def _mean_score(tmp_path, strategy, trials=20, seeds=range(4)):
    """Mean score over the first `trials` trials, averaged over seeds (no repeats are allowed,
    so a strategy that learns spends more of its budget in the good region)."""

    total = 0.0
    for seed in seeds:
        spec = small_spec(strategy=strategy, budget={"max_trials": trials}, seed=seed)
        spec["search_space"]["hyperparameters"] = {
            "learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1.0},
            "epochs": {"type": "int", "low": 1, "high": 8},
        }
        search = LocalStudy(validate_dict(spec))
        for _ in range(trials):
            (c,), _ = search.propose(1)
            score = (-abs(math.log10(c.hyperparameters["learning_rate"]) + 2) - 0.1 * abs(c.hyperparameters["epochs"] - 6)
                     + (1.0 if c.template_id == "asked" else 0.0))
            search.feedback(c.id, score)
            total += score
    return total / (trials * len(seeds))


@pytest.mark.parametrize("strategy", ["tpe", "cmaes", "bandit", "rl"])
def test_adaptive_strategies_beat_random_search(tmp_path, strategy):
    assert _mean_score(tmp_path, strategy) > _mean_score(tmp_path, "random")


@pytest.mark.parametrize("strategy", ["bandit", "rl"])
def test_policies_are_rebuilt_from_the_records_after_a_restart(tmp_path, strategy):
    spec = validate_dict(small_spec(strategy=strategy, budget={"max_trials": 4}))
    search = LocalStudy(spec)
    for _ in range(2):
        (c,), _ = search.propose(1)
        search.feedback(c.id, 1.0 if c.template_id == "asked" else 0.0)
    reloaded = LocalStudy(spec, records=search.records)  # a restarted replica, given the gateway's records
    policy, again = search.policy(), reloaded.policy()
    if strategy == "bandit":
        assert all((again.counts[k] == policy.counts[k]).all() for k in policy.counts)
        assert len(again.values) == 2
    else:
        assert all((again.logits[k] == policy.logits[k]).all() for k in policy.logits)


def test_warm_start_priors_inform_the_search_but_are_not_candidates(tmp_path):
    from openautoglm.common.spec.warm_start import prior_params

    spec = validate_dict(small_spec(strategy="bandit", budget={"max_trials": 4}))
    params = prior_params(spec.search_space, "asked", {"question": "How does this feel?"}, {"epochs": 2, "learning_rate": 0.003})
    priors = [Prior("asked", {"question": "How does this feel?"}, params, 0.9)]
    search = LocalStudy(spec, priors)
    assert len(search.search.rebuild(search.records).trials) == 1 and search.records == []
    assert len(search.policy().values) == 1  # the bandit has learnt from it
    batch, _ = search.propose(4)
    assert len(batch) == 4  # the prior's candidate can still be trained in this study
    again = LocalStudy(spec, priors, records=search.records)
    assert sum(t.user_attrs.get("prior", False) for t in again.search.rebuild(again.records).trials) == 1  # not added twice


@pytest.mark.parametrize("template,variables,hps,message", [
    ("ghost", {}, {"epochs": 1, "learning_rate": 0.003}, "template 'ghost' is not in the search space"),
    ("asked", {"question": "Other?"}, {"epochs": 1, "learning_rate": 0.003}, "variable 'question'"),
    ("plain", {}, {"epochs": 7, "learning_rate": 0.003}, "'epochs' = 7 is not one of"),
    ("plain", {}, {"epochs": 1}, "'learning_rate' is missing"),
    ("plain", {}, {"epochs": 1, "learning_rate": 0.003, "dropout": 0.1}, "dropout are not in the search space"),
])
def test_priors_that_do_not_match_the_space_are_refused(template, variables, hps, message):
    from openautoglm.common.spec.warm_start import prior_params

    spec = validate_dict(small_spec())
    with pytest.raises(ValueError, match=message):
        prior_params(spec.search_space, template, variables, hps)


def test_prior_trials_file_formats(tmp_path):
    import json

    from openautoglm.common.spec.schema import SpecError
    from openautoglm.common.spec.warm_start import load_prior_trials

    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"template_id": "plain", "hyperparameters": {"epochs": 1}, "objective": 0.5}) + "\n\n{oops\n")
    with pytest.raises(SpecError) as info:
        load_prior_trials(jsonl)
    assert info.value.line == 3
    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps({"study_id": "st-x", "trials": [
        {"candidate": {"template_id": "plain", "variables": {}, "hyperparameters": {"epochs": 1}}, "objective": 0.7},
        {"candidate": {"template_id": "plain", "variables": {}, "hyperparameters": {"epochs": 2}}, "objective": None}]}))
    rows = load_prior_trials(demo)
    assert len(rows) == 1 and rows[0]["objective"] == 0.7


def test_instructions_and_their_position_are_searched_dimensions(tmp_path):
    spec = small_spec(budget={"max_trials": 40})
    spec["search_space"]["instructions"] = ["Be brief.", "Think about tone."]
    spec["search_space"]["instruction_position"] = ["before", "after"]
    model = validate_dict(spec)
    from openautoglm.common.spec.protos import spec_from_proto, spec_to_proto

    assert spec_from_proto(spec_to_proto(model)) == model
    search = LocalStudy(model)
    assert len(search.search.prompts) == 2 * 2 * 2 and search.search.space_size == 8 * 2
    prompts = {p.prompt for p in search.search.prompts}
    assert "Be brief. Review: {input} Sentiment:" in prompts and "Review: {input} Sentiment: Be brief." in prompts
    batch, exhausted = search.propose(16)
    assert len(batch) == 16 and exhausted
    assert {c.variables["instruction_position"] for c in batch} == {"before", "after"}


def test_reserved_dimension_names_are_refused():
    from openautoglm.common.spec.schema import SpecError

    spec = small_spec()
    spec["search_space"]["variables"]["instruction_text"] = ["x"]
    with pytest.raises(SpecError, match="reserved"):
        validate_dict(spec)


@pytest.mark.parametrize("pruner", ["median", "successive_halving"])
def test_the_pruner_stops_a_trial_that_trails_the_others(pruner):
    spec = small_spec(strategy="random", budget={"max_trials": 4}, pruner=pruner)
    search = LocalStudy(validate_dict(spec))
    batch, _ = search.propose(4)
    for c in batch[:3]:
        for epoch in (1, 2, 3):
            assert search.report(c.id, epoch, 0.8 + 0.01 * epoch) is False or pruner == "successive_halving"
        search.feedback(c.id, 0.85)
    assert search.report(batch[3].id, 1, 0.1) is True
    assert search.feedback(batch[3].id, None, pruned=True) is True
    rebuilt = {t.user_attrs["number"]: t for t in search.search.rebuild(search.records).trials}
    assert rebuilt[batch[3].number].state.name == "PRUNED"


def _record(candidate, **fields):
    return TrialRecord(candidate.number, candidate.template_id, candidate.variables, candidate.hyperparameters,
                       search_state=candidate.search_state, **fields)


def test_candidates_a_caller_lost_are_proposed_again(tmp_path):
    """The gateway crashed after Propose but before recording the answer: nothing is lost."""
    search = StudySearch(validate_dict(small_spec(strategy="grid", budget={"max_trials": 4})), RenderCache())
    first, _ = search.propose([], 2, 0)
    lost = first[1]
    recorded = [_record(first[0])]  # only the first answer was recorded
    again, _ = search.propose(recorded, 1, 1)
    assert [c.id for c in again] == [lost.id] and again[0].prompt == lost.prompt
    assert again[0].hyperparameters == lost.hyperparameters
    rest, exhausted = search.propose(recorded + [_record(lost)], 4, 2)
    assert len(rest) == 2 and exhausted and lost.id not in {c.id for c in rest}


def test_pareto_front_keeps_exactly_the_non_dominated_trials():
    from openautoglm.common.spec.protos import spec_to_proto
    from openautoglm.gateway.results import pareto_front
    from openautoglm.v1 import common_pb2

    spec = spec_to_proto(validate_dict(small_spec(objective={"metric": "accuracy"},
                                                  extra_objectives=[{"metric": "latency_ms", "direction": "minimize"}])))
    study = common_pb2.Study(spec=spec)
    for i, (acc, ms) in enumerate([(0.9, 5.0), (0.8, 2.0), (0.7, 3.0), (0.9, 6.0), (0.95, 9.0)]):
        study.trials.add(id=f"t{i}", status=common_pb2.TRIAL_STATUS_SUCCEEDED, objective_value=acc, extra_objective_values=[ms])
    study.trials.add(id="failed", status=common_pb2.TRIAL_STATUS_FAILED, objective_value=1.0, extra_objective_values=[0.1])
    assert pareto_front(study) == ["t0", "t1", "t4"]


def _conditional_spec(strategy="tpe"):
    spec = small_spec(strategy=strategy, budget={"max_trials": 30})
    spec["search_space"]["hyperparameters"] = {
        "epochs": {"type": "choice", "values": [1, 2]},
        "weight_decay": {"type": "uniform", "low": 0.0, "high": 0.1, "when": {"epochs": [2]}},
    }
    return spec


@pytest.mark.parametrize("strategy", ["random", "tpe", "bandit", "rl"])
def test_conditional_parameters_appear_only_when_their_condition_holds(strategy):
    search = LocalStudy(validate_dict(_conditional_spec(strategy)))
    batch, _ = search.propose(12)
    assert batch
    for c in batch:
        assert ("weight_decay" in c.hyperparameters) == (c.hyperparameters["epochs"] == 2)
        search.feedback(c.id, 0.5)


def test_conditional_specs_are_checked_and_round_trip():
    from openautoglm.common.spec.protos import spec_from_proto, spec_to_proto
    from openautoglm.common.spec.schema import SpecError

    model = validate_dict(_conditional_spec())
    assert spec_from_proto(spec_to_proto(model)) == model
    bad = _conditional_spec()
    bad["search_space"]["hyperparameters"]["weight_decay"]["when"] = {"epochs": [5]}
    with pytest.raises(SpecError) as info:
        validate_dict(bad)
    assert info.value.field == "search_space.hyperparameters.weight_decay.when"
    with pytest.raises(SpecError) as info:
        validate_dict(_conditional_spec("grid"))
    assert "conditional" in info.value.message


@pytest.mark.parametrize("policy_class", ["ThompsonBandit", "Ppo"])
def test_policies_propose_their_best_assignment_the_study_has_not_had(policy_class):
    import itertools

    from openautoglm.prompt_generator import policies

    dims = {"prompt": ["a", "b", "c"], "lr": [0.1, 0.01], "epochs": [1, 2]}
    policy = getattr(policies, policy_class)(dims, seed=0)
    for params in itertools.product(*dims.values()):  # teach it that ("c", 0.1, 2) is best
        assignment = dict(zip(dims, params))
        policy.observe(assignment, 1.0 if assignment == {"prompt": "c", "lr": 0.1, "epochs": 2} else 0.0)
    everything = [dict(zip(dims, p)) for p in itertools.product(*dims.values())]
    seen: list[dict] = []
    for _ in range(len(everything)):
        proposal = policy.propose(seen)
        assert proposal not in seen
        seen.append(proposal)
    assert sorted(map(str, seen)) == sorted(map(str, everything))  # every assignment, none twice
    left = everything[5]
    assert policy.propose([a for a in everything if a != left]) == left


@pytest.mark.parametrize("strategy", ["grid", "random", "tpe", "cmaes", "bandit", "rl"])
def test_the_same_records_give_the_same_proposal_on_any_replica(strategy):
    """Two searches (two replicas, or one before and after a restart) asked with the same records
    answer the same, and proposing several at once equals proposing them one by one."""
    spec = small_spec(strategy=strategy, budget={"max_trials": 12})
    spec["search_space"]["hyperparameters"]["epochs"] = {"type": "int", "low": 1, "high": 8}
    if strategy != "grid":
        spec["search_space"]["hyperparameters"]["learning_rate"] = {"type": "loguniform", "low": 1e-4, "high": 1e-1}
    model = validate_dict(spec)
    one = LocalStudy(model)
    for _ in range(6):
        batch, _ = one.propose(1)
        for c in batch:
            one.feedback(c.id, 0.1 * len(c.prompt) % 1.0)
    records = list(one.records)
    replica = StudySearch(model, RenderCache())
    ahead, _ = replica.propose(records, 3, len(records))
    stepwise = []
    for _ in range(3):
        (c,), _ = one.propose(1)
        stepwise.append(c)
    assert [(c.id, c.search_state) for c in ahead] == [(c.id, c.search_state) for c in stepwise]
    assert len({r.number for r in one.records}) == len(one.records) == 9


def _ppo_after(rewards, **kw):
    from openautoglm.prompt_generator.policies import Ppo

    policy = Ppo({"prompt": ["a", "b", "c"], "lr": [0.1, 0.01]}, seed=0, **kw)
    for i, reward in enumerate(rewards):
        policy.observe({"prompt": "abc"[i % 3], "lr": (0.1, 0.01)[i % 2]}, reward)
    policy.learn(flush=True)
    return policy


def test_ppo_learns_the_better_value_and_its_rewards_are_normalised():
    rewards = [1.0 if i % 3 == 2 else 0.0 for i in range(12)]  # prompt "c" pays
    policy = _ppo_after(rewards)
    probs = policy._probs("prompt")
    assert probs[2] > 0.6 and probs[2] == probs.max()
    # Normalised rewards: any affine rescaling of the objective learns exactly the same policy.
    scaled = _ppo_after([1000 * r + 5 for r in rewards])
    assert np.allclose(scaled.logits["prompt"], policy.logits["prompt"])
    assert np.allclose(scaled.logits["lr"], policy.logits["lr"])
    assert policy.updates == 6  # one per batch of 2


def test_ppo_clips_each_update_and_its_baseline_tracks_the_returns():
    rewards = [1.0 if i % 3 == 2 else 0.0 for i in range(12)]
    clipped = _ppo_after(rewards, learning_rate=5.0, clip=0.2)
    free = _ppo_after(rewards, learning_rate=5.0, clip=1e9)  # no clipping: the same steps, unbounded
    assert np.ptp(clipped.logits["prompt"]) < np.ptp(free.logits["prompt"])
    # One batch, many epochs: the clip stops each push once its ratio leaves [0.8, 1.2]; without
    # it, twenty epochs make the policy all but deterministic on one reward.
    clipped_once = _ppo_after([0.0, 1.0], epochs=20, clip=0.2)
    free_once = _ppo_after([0.0, 1.0], epochs=20, clip=1e9)
    assert clipped_once._probs("prompt")[1] < 0.7 and free_once._probs("prompt")[1] > 0.95
    assert np.isfinite(_ppo_after(rewards, learning_rate=500.0, clip=1e9).logits["prompt"]).all()
    assert abs(_ppo_after([2.0, 4.0] * 10, epochs=20).baseline) < 0.2  # normalised returns average 0


def test_ppo_entropy_bonus_spreads_a_peaked_policy_when_rewards_say_nothing():
    from openautoglm.prompt_generator.policies import Ppo

    policy = Ppo({"prompt": ["a", "b", "c"]}, seed=0, entropy_coef=0.5)
    policy.logits["prompt"] = np.array([3.0, 0.0, 0.0])
    before = policy._probs("prompt")[0]
    for _ in range(8):
        policy.observe({"prompt": "a"}, 1.0)  # equal rewards: zero advantage
    assert policy._probs("prompt")[0] < before
