"""Benchmarks stay runnable: each runs here in its quick form and prints its JSON summary."""
import json
import subprocess
import sys
from pathlib import Path

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
