"""The `openautoglm` command as a user runs it: demo, spec errors, config errors, `up` and stop."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import cli


def test_demo_json_runs_a_whole_study_on_a_fresh_stack(tmp_path):
    started = time.monotonic()
    result = cli("demo", "--json", env={"OPENAUTOGLM_DATA_DIR": str(tmp_path), "OPENAUTOGLM_GATEWAY": ""}, timeout=400)
    wall = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\ndemo wall time: {wall:.1f}s")
    assert re.fullmatch(r"[0-9a-f]{32}", summary["trace_id"])
    assert summary["study_id"].startswith("st-") and summary["state"] == "completed"
    trials = summary["trials"]
    assert len(trials) >= 8 and all(t["status"] == "succeeded" for t in trials)
    assert len({t["candidate"]["template_id"] for t in trials}) >= 2
    assert len({json.dumps(t["candidate"]["variables"], sort_keys=True) for t in trials}) >= 3
    assert len({json.dumps(t["candidate"]["hyperparameters"], sort_keys=True) for t in trials}) >= 2
    assert all({"accuracy", "macro_f1"} <= set(t["metrics"]) for t in trials)
    best = summary["best"]
    assert best["objective"] == max(t["objective"] for t in trials)
    assert "trace id:" in result.stderr and "best:" in result.stderr  # the human view went to stderr


def test_submit_refuses_a_bad_spec_naming_file_line_and_field(tmp_path):
    spec = tmp_path / "study.yaml"
    spec.write_text(
        "task: classification\n"
        "dataset: {builtin: sentiment-demo}\n"
        "search_space:\n"
        "  templates: [{id: a, text: 'Review: {input}'}]\n"
        "budget:\n"
        "  max_trials: -2\n"
    )
    result = cli("study", "submit", str(spec), "--gateway", "127.0.0.1:1")
    assert result.returncode == 2
    assert f"{spec}:6: budget.max_trials:" in " ".join(result.stderr.split())


def test_serve_fails_fast_naming_the_missing_settings(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAUTOGLM_")}
    result = subprocess.run([sys.executable, "-m", "openautoglm.cli", "serve", "gateway"], capture_output=True,
                            text=True, env={**env, "OPENAUTOGLM_DATA_DIR": str(tmp_path), "COLUMNS": "300"}, timeout=60)
    assert result.returncode == 2
    for name in ("OPENAUTOGLM_NATS_URL", "OPENAUTOGLM_PROMPT_GENERATOR_ADDR", "OPENAUTOGLM_SCHEDULER_ADDR", "OPENAUTOGLM_EVALUATOR_ADDR"):
        assert name in result.stderr
    unknown = subprocess.run([sys.executable, "-m", "openautoglm.cli", "serve", "nonsense"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "unknown service" in unknown.stderr


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_up_serves_until_sigterm_and_leaves_no_process_behind(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "openautoglm.cli", "up", "--data-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"})
    deadline = time.monotonic() + 120
    while not (tmp_path / "stack.json").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "stack did not come up"
        time.sleep(0.2)
    endpoints = json.loads((tmp_path / "stack.json").read_text())["endpoints"]
    children = _children(proc.pid)
    assert len(children) == 6  # nats + five services
    # Over TLS, as the operator whose certificate `up` created in its data dir.
    health = cli("health", "--tls", "gateway", endpoints["gateway"], env={"OPENAUTOGLM_DATA_DIR": str(tmp_path)})
    assert health.returncode == 0 and "SERVING" in health.stdout
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, output
    assert "stopped:" in output and "gateway=0" in output and "trainer=0" in output
    for child in children:
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)
    for name in ("nats", "prompt-generator", "gnn-scheduler", "evaluator", "trainer", "gateway"):
        assert endpoints[name]
