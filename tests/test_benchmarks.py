"""Benchmarks stay runnable: each runs here in its quick form and prints its JSON summary."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(script: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--json"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_demo_trace_reports_spans_from_all_five_services():
    report = _run("demo_trace.py")
    assert set(report["spans_per_service"]) == {"gateway", "prompt-generator", "gnn-scheduler", "trainer", "evaluator"}
    assert report["trials"] >= 8 and report["spans_total"] == sum(report["spans_per_service"].values())


def test_train_throughput_quick_reports_every_precision():
    report = _run("train_throughput.py", "--quick")
    assert report["device"] == "cpu" and report["mfu"] is None
    assert set(report["tokens_per_s"]) == set(report["peak_mem_mb"]) == {"fp32", "bf16", "fp16"}
    assert report["tokens_per_s"]["fp32"] > 0 and report["tokens_per_s"]["bf16"] > 0
    assert report["tokens_per_s"]["fp16"] is None  # needs CUDA


def test_eval_throughput_quick_reports_both_metric_kinds():
    report = _run("eval_throughput.py", "--quick")
    assert report["generation_metrics_examples_per_s"] > 0 and report["embedding_metric_examples_per_s"] > 0


def test_search_efficiency_quick_reports_every_strategy_on_two_tasks():
    report = _run("search_efficiency.py", "--quick")
    assert len(report["trials_to_95"]) >= 2
    for task, means in report["trials_to_95"].items():
        assert set(means) == {"random", "grid", "tpe", "cmaes", "bandit", "rl"}
        assert all(1 <= v <= report["space_size"][task] for v in means.values())
        assert set(report["trials_to_95_se"][task]) == set(means)
        assert all(0 <= se < report["space_size"][task] for se in report["trials_to_95_se"][task].values())
    # Tables that tell strategies apart: few candidates near the best; all found in the table.
    for task, size in report["space_size"].items():
        assert report["within_95"][task] <= 0.1 * size and report["trained_missing"][task] == 0
    assert set(report["instruction_search"]) == {"sentiment_edits", "sentiment_edits_short"}
    for edits in report["instruction_search"].values():
        assert set(edits["trials_to_95"]) == {"random", "grid", "tpe", "cmaes", "bandit", "rl", "grips"}
        assert all(1 <= v <= edits["budget"] for v in edits["trials_to_95"].values())
        assert edits["trained_missing"] == 0 and edits["candidates"] > edits["written_candidates"]
        versus = edits["generated_vs_written_on_test"]
        assert versus["generated"]["lineage"]["source"] == "edit" and versus["generated"]["lineage"]["edits"]
        assert versus["test_gain"] == pytest.approx(versus["generated"]["test"] - versus["written"]["test"])
    # The strategy comparison's table tells strategies apart as the fixed ones do.
    comparison = report["instruction_search"]["sentiment_edits"]
    assert comparison["within_95"] <= 0.1 * comparison["candidates"]


def test_scheduler_quick_reports_every_policy_on_every_set(tmp_path):
    # Any directory of WfFormat 1.5 traces: here a copy of the shipped ones.
    workflows = tmp_path / "traces"
    shutil.copytree(ROOT / "benchmarks" / "data" / "wfinstances", workflows)
    report = _run("scheduler.py", "--quick", "--workflows", str(workflows))
    sets = {f"{family}{suffix}" for family in ("random_layered", "wfcommons", "real_workflows", "studies") for suffix in ("", "_batched")}
    policies = {"fifo", "sjf_cp", "fair", "weighted_fair", "tetris", "critical_path", "heft", "gnn"}
    for key in ("avg_jct", "makespan"):
        assert set(report[key]) == sets
        for values in report[key].values():
            assert set(values) == policies and all(v > 0 for v in values.values())
    for name, ratio in report["gnn_vs_best_heuristic"].items():
        best = report["best_heuristic"][name]
        assert ratio == pytest.approx(report["avg_jct"][name]["gnn"] / report["avg_jct"][name][best], abs=1e-3)
    assert set(report["tuned"]) == {"poisson", "batched"}
    assert report["workflows_dir"] == str(workflows)
    learning = report["learning"]["validation_jct_vs_sjf_cp"]
    assert set(learning) == {"0", "1"} and all(run["imitation"] > 0 and run["ppo"] > 0 for run in learning.values())
    assert report["cost_prediction"]["trials"] == 12 and report["cost_prediction_mape"] >= 0
    assert report["heft_paper_example"] == 80
    assert report["plan_ms_1000_nodes"] > 0


def test_mesh_overhead_quick_reports_its_figures():
    report = _run("mesh_overhead.py", "--quick")
    assert report["trials"] == report["trainings"] == 8
    assert 0.0 <= report["idle_share"] < 1.0 and report["mean_trial_ms"] > 0
    assert report["messages_per_trial"] > 0 and report["in_process_ratio"] > 0
    assert report["in_process_ratio_trainer_threads"] > 0 and 0.0 <= report["coordination_share"] < 1.0
    assert report["rpcs"] and report["nats_messages"]


def test_load_quick_reports_latencies_rss_and_cpu_per_event():
    report = _run("load.py", "--quick")
    assert set(report["methods"]) == {"GetStudy", "ListStudies", "WatchStudy", "CreateStudy"}
    assert all(m["calls"] > 0 and m["p99_ms"] >= m["p50_ms"] > 0 for m in report["methods"].values())
    assert report["requests_per_s"] > 0 and report["gateway_peak_rss_mb"] > 0
    assert report["offered_requests_per_s"] == 50 * 1.25  # paced: 50 clients at 1.25 requests/s each
    saturated = report["saturation"]
    assert saturated["requests_per_s"] > 0 and saturated["errors"] == 0
    assert set(saturated["methods"]) == set(report["methods"])
    assert set(report["cpu_ms_per_event"]) == {"10", "1000"} and all(v > 0 for v in report["cpu_ms_per_event"].values())
    assert report["errors"] == 0, report["error_kinds"]


def test_serving_quick_reports_batched_unbatched_and_cache_hit_figures():
    report = _run("serving.py", "--quick")
    for mode in ("batched", "unbatched"):
        assert set(report[mode]) == {"1", "8", "32"}
        assert all(report[mode][n]["rps"] > 0 and 0 < report[mode][n]["p50_ms"] <= report[mode][n]["p99_ms"]
                   for n in report[mode])
    assert report["cache_hit"]["p50_ms"] > 0
    assert report["throughput_ratio_32"] > 0 and report["p99_32_over_unbatched_p99_1"] > 0


def test_dashboard_quick_reports_page_load_and_sse_latency():
    """Needs chromium (the browser tests' skip-or-fail rule: test_dashboard_browser.py)."""
    import os

    if not (os.environ.get("OPENAUTOGLM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")):
        if os.environ.get("OPENAUTOGLM_REQUIRE_BROWSER"):
            pytest.fail("no chromium on PATH")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    report = _run("dashboard.py", "--quick")
    assert report["trials"] == 20 and report["state"] == "STUDY_STATE_COMPLETED"
    assert len(report["page_load_ms"]["runs"]) == 2 and report["page_load_ms"]["median"] > 0
    assert report["get_study_ms"]["median"] > 0 and report["page_load_over_get_study"] > 0
    # The trials that finished while the page and the gRPC watcher both watched (all but any
    # that finished before they subscribed) were drawn by the page and received by the watcher.
    assert report["trials"] - 3 <= report["sse_latency_ms"]["n"] <= report["trials"]
    assert 0 < report["grpc_watch_latency_ms"]["p50"] and 0 < report["sse_latency_ms"]["p50"] <= report["sse_latency_ms"]["max"]
