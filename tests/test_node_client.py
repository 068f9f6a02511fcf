"""Another language: the Node.js example client (grpc-js + proto-loader, .proto files only)
creates a study through the gateway, reads it back and follows it to the end."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_node_client_creates_and_reads_back_a_study(stack):
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "@grpc" / "grpc-js").exists():
        if os.environ.get("CI"):
            pytest.fail("node and npm install are part of the CI set-up")
        pytest.skip("node or node_modules missing (run make setup)")
    result = subprocess.run(
        [node, str(ROOT / "examples" / "node-client" / "client.js"), "--gateway", stack.address("gateway"), "--wait"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OPENAUTOGLM_API_KEY": stack.api_key,
                                 "OPENAUTOGLM_CA_CERT": str(stack.tls_dir / "ca.crt")},
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["study_id"].startswith("st-") and len(out["trace_id"]) == 32
    assert out["created_state"] == "STUDY_STATE_RUNNING" and out["fetched_name"] == "node-client-demo"
    assert out["final_state"] == "STUDY_STATE_COMPLETED"
    assert out["changes"][0] == "snapshot" and out["changes"][-1] == "study.completed"
    assert len(out["trials"]) == 2 and all(t["status"] == "TRIAL_STATUS_SUCCEEDED" for t in out["trials"])
    assert out["best_trial_id"] in {t["id"] for t in out["trials"]}


def test_node_client_sees_invalid_argument_for_a_bad_spec(stack, tmp_path):
    if shutil.which("node") is None or not (ROOT / "node_modules" / "@grpc" / "grpc-js").exists():
        pytest.skip("node or node_modules missing (run make setup)")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"task": "TASK_TYPE_CLASSIFICATION", "dataset": {"builtin": "sentiment-demo"},
                               "search_space": {"templates": []}, "budget": {"max_trials": 1}}))
    result = subprocess.run(["node", str(ROOT / "examples" / "node-client" / "client.js"), "--gateway",
                             stack.address("gateway"), "--spec", str(bad)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "OPENAUTOGLM_API_KEY": stack.api_key,
                                 "OPENAUTOGLM_CA_CERT": str(stack.tls_dir / "ca.crt")})
    assert result.returncode == 1
    assert "INVALID_ARGUMENT: spec.search_space.templates:" in result.stderr


def test_node_client_goes_from_an_uploaded_dataset_to_predictions_of_the_served_best_model(stack, tmp_path):
    """Upload (client streaming, sha256) -> study -> registered best -> download (every digest
    checked in Node) -> Deploy -> Predict, which equals the trial's own eval predictions."""
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "@grpc" / "grpc-js").exists():
        if os.environ.get("CI"):
            pytest.fail("node and npm install are part of the CI set-up")
        pytest.skip("node or node_modules missing (run make setup)")
    data = tmp_path / "node-reviews.jsonl"
    data.write_text("".join(json.dumps({"text": f"item {i} was {'great fine' if i % 2 else 'awful dull'}",
                                        "label": "positive" if i % 2 else "negative"}) + "\n" for i in range(60)))
    result = subprocess.run(
        [node, str(ROOT / "examples" / "node-client" / "client.js"), "--gateway", stack.address("gateway"), "--serve", str(data)],
        capture_output=True, text=True, timeout=400, env={**os.environ, "OPENAUTOGLM_API_KEY": stack.api_key,
                                                         "OPENAUTOGLM_CA_CERT": str(stack.tls_dir / "ca.crt")},
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["artifact_id"].startswith("ds-") and out["model"] == "node-served" and out["version"] >= 1
    assert out["registered_trial_id"] == out["best_trial_id"]
    # Predict answers every validation example the trial predicted (the client's seed is 1; the
    # test split, scored once at the end, is kept out of them).
    from openautoglm.common import datasets
    validation = datasets.load_splits("", str(data), "classification", seed=1, test_fraction=0.2).validation
    assert out["files_checked"] >= 6 and out["predicted"] == len(validation) >= 8
    assert out["equal_to_trial"], out["labels"]
