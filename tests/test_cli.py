"""The `openautoglm` command as a user runs it: demo, spec errors, config errors, `up` and stop."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

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
    assert all(t["predicted_seconds"] > 0 and t["actual_seconds"] > 0 for t in trials)
    best = summary["best"]
    assert best["objective"] == max(t["objective"] for t in trials)
    assert "trace id:" in result.stderr and "best:" in result.stderr  # the human view went to stderr
    # The honest answer: the winner's test scores beside its validation ones, printed and in the JSON.
    final = summary["final"]
    assert final["best_trial_id"] == best["id"] and final["validation_metrics"] == best["metrics"]
    assert {"accuracy", "macro_f1"} <= set(final["test_metrics"]) and final["test_examples"] > 0 and not final["error"]
    assert "the winner on" in result.stderr and "test" in result.stderr
    assert "dashboard: this demo's own stack has stopped" in " ".join(result.stderr.split())


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
    state = json.loads((tmp_path / "stack.json").read_text())
    endpoints = state["endpoints"]
    children = _children(proc.pid)
    assert len(children) == 6  # nats + five services
    # Over TLS, as the operator whose certificate `up` created in its data dir.
    health = cli("health", "--tls", "gateway", endpoints["gateway"], env={"OPENAUTOGLM_DATA_DIR": str(tmp_path)})
    assert health.returncode == 0 and "SERVING" in health.stdout
    # The JSON/HTTP API too, on loopback, its URL printed and in stack.json.
    with urllib.request.urlopen(f"{state['http']['gateway']}/openapi.json", timeout=30) as served:
        assert "/v1/studies" in json.load(served)["paths"]
    # The dashboard on the same port; the demo finds its URL from the running stack's record.
    with urllib.request.urlopen(f"{state['http']['gateway']}/dashboard/", timeout=30) as page:
        assert "static/app.js" in page.read().decode()
    from openautoglm.common.stack import running_stack_endpoint

    assert running_stack_endpoint(tmp_path, "gateway", "http") == state["http"]["gateway"]
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, output
    assert f"{state['http']['gateway']}/v1/studies" in output
    assert f"dashboard: {state['http']['gateway']}/dashboard/" in output
    assert "stopped:" in output and "gateway=0" in output and "trainer=0" in output
    for child in children:
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)
    for name in ("nats", "prompt-generator", "gnn-scheduler", "evaluator", "trainer", "gateway"):
        assert endpoints[name]


def test_data_upload_refuses_a_bad_jsonl_naming_the_file_and_line(tmp_path):
    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"text": "a", "label": "b"}\n[1, 2]\n')
    result = cli("data", "upload", str(bad), env={"OPENAUTOGLM_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert f"{bad}: dataset line 2: not a JSON object" in " ".join(result.stderr.split())


def test_data_and_models_commands_against_the_stack(stack, tmp_path):
    """Upload a dataset with the CLI, run a study on it, and find its registered best model."""
    import json as _json

    data = tmp_path / "cli.jsonl"
    data.write_text("".join(_json.dumps({"text": f"row {i} {'good' if i % 2 else 'bad'}", "label": "pos" if i % 2 else "neg"})
                            + "\n" for i in range(40)))
    env = {"OPENAUTOGLM_DATA_DIR": str(stack.data_dir), "OPENAUTOGLM_GATEWAY": stack.address("gateway")}
    uploaded = cli("data", "upload", str(data), env=env)
    assert uploaded.returncode == 0, uploaded.stderr
    artifact_id = uploaded.stdout.strip()
    assert artifact_id.startswith("ds-")
    assert artifact_id in cli("data", "list", env=env).stdout
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""name: cli-served
task: classification
dataset: {{artifact: {artifact_id}}}
search_space:
  templates: [{{id: plain, text: "Review: {{input}} Sentiment:"}}]
  hyperparameters: {{epochs: {{type: choice, values: [1]}}}}
objective: {{terms: {{accuracy: 1.0}}}}
strategy: grid
budget: {{max_trials: 1}}
""")
    submitted = cli("study", "submit", str(spec), "--watch", env=env, timeout=300)
    assert submitted.returncode == 0, submitted.stderr
    listed = ""
    for _ in range(120):  # registered when the study completed; READY once its files are stored
        listed = cli("models", "list", "--name", "cli-served", env=env).stdout
        if "ready" in listed:
            break
        time.sleep(1)
    assert "cli-served" in listed and "ready" in listed, listed
    downloaded = cli("models", "download", "cli-served", str(tmp_path / "out"), env=env)
    assert downloaded.returncode == 0, downloaded.stderr
    assert (tmp_path / "out" / "manifest.json").is_file() and (tmp_path / "out" / "model.safetensors").is_file()
    assert cli("models", "deploy", "cli-served:1", env=env).returncode == 0
    predicted = cli("models", "predict", "cli-served", "row 3 good", "row 4 bad", env=env)
    assert predicted.returncode == 0, predicted.stderr
    answers = [_json.loads(line) for line in predicted.stdout.splitlines()]
    assert [a["input"] for a in answers] == ["row 3 good", "row 4 bad"] and all(a["label"] in ("pos", "neg") for a in answers)
    assert cli("models", "undeploy", "cli-served", env=env).returncode == 0
