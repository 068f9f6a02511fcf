"""The .proto files are the contract: stubs must match them and buf lint must pass."""
import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import gen_protos  # noqa: E402


def test_checked_in_stubs_match_the_protos(tmp_path):
    out = tmp_path / "v1"
    gen_protos.generate(out)
    checked_in = ROOT / "services" / "openautoglm" / "v1"
    generated = sorted(p.name for p in out.iterdir())
    assert generated == sorted(p.name for p in checked_in.iterdir() if p.is_file()), "stub file set differs"
    drifted = [name for name in generated if not filecmp.cmp(out / name, checked_in / name, shallow=False)]
    assert not drifted, f"stubs drifted from protos (run `make protos`): {drifted}"


def test_drift_is_detected(tmp_path):
    """The check above can fail: a changed proto yields different stubs."""
    out = tmp_path / "v1"
    gen_protos.generate(out)
    before = (out / "studies_pb2.py").read_bytes()
    proto_copy = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", proto_copy)
    studies = proto_copy / "openautoglm" / "v1" / "studies.proto"
    studies.write_text(studies.read_text().replace("string request_id = 2;", "string request_id = 2;\n  string owner = 3;"))
    original = gen_protos.PROTO_ROOT, gen_protos.PROTO_DIR
    gen_protos.PROTO_ROOT, gen_protos.PROTO_DIR = proto_copy, proto_copy / "openautoglm" / "v1"
    try:
        gen_protos.generate(out)
    finally:
        gen_protos.PROTO_ROOT, gen_protos.PROTO_DIR = original
    assert (out / "studies_pb2.py").read_bytes() != before


def test_buf_lint_passes():
    buf = ROOT / "node_modules" / ".bin" / "buf"
    if not buf.exists():
        if os.environ.get("CI"):
            pytest.fail("buf is not installed (npm ci) in CI")
        pytest.skip("buf not installed: run npm ci")
    result = subprocess.run([str(buf), "lint", "protos"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_service_of_the_contract_is_served():
    from openautoglm.evaluator.app import EvaluatorApp
    from openautoglm.gateway.app import GatewayApp
    from openautoglm.gnn_scheduler.app import SchedulerApp
    from openautoglm.prompt_generator.app import PromptGeneratorApp
    from openautoglm.trainer.app import TrainerApp

    served = {n for app in (EvaluatorApp, GatewayApp, SchedulerApp, PromptGeneratorApp, TrainerApp) for n in app.service_names}
    assert served == {
        "openautoglm.v1.Studies", "openautoglm.v1.PromptGenerator", "openautoglm.v1.Scheduler",
        "openautoglm.v1.Trainer", "openautoglm.v1.Evaluator", "openautoglm.v1.Keys",
        "openautoglm.v1.Artifacts", "openautoglm.v1.Models", "openautoglm.v1.ModelServer", "openautoglm.v1.PromptModel",
        "openautoglm.v1.Cluster",
    }
