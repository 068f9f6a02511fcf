"""Real workflow traces (WfFormat 1.5) load as scheduler jobs: the shipped instances, any
well-formed file, and a clear refusal naming the file and the field for a malformed one."""
import json
from pathlib import Path

import pytest

from openautoglm.gnn_scheduler.workflows import WorkflowError, load_directory, load_workflow

SHIPPED = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "wfinstances"


def _trace(tasks: list[dict], files: list[dict] | None = None, version: str = "1.5") -> dict:
    """A minimal WfFormat 1.5 execution trace."""
    return {
        "name": "t", "schemaVersion": version,
        "workflow": {
            "specification": {
                "tasks": [{"name": t["id"], "id": t["id"], "parents": t.get("parents", []), "children": [],
                           "inputFiles": t.get("in", []), "outputFiles": t.get("out", [])} for t in tasks],
                "files": files or [],
            },
            "execution": {"makespanInSeconds": 1, "executedAt": "2024-01-01T00:00:00Z",
                          "tasks": [{"id": t["id"], **({"runtimeInSeconds": t["runtime"]} if "runtime" in t else {}),
                                     **({"memoryInBytes": t["memory"]} if "memory" in t else {})} for t in tasks]},
        },
    }


def test_every_shipped_instance_loads_with_its_documented_task_count():
    counts = {"montage": 58, "epigenomics": 73, "1000genome": 82, "seismology": 101, "srasearch": 42,
              "blast": 43, "bwa": 104, "sarek": 26, "methylseq": 36}
    jobs = load_directory(SHIPPED)
    assert len(jobs) == 9
    for job in jobs:
        family = job.id.split("-")[0]
        assert len(job.tasks) == counts[family], job.id
        assert job.edges and all(t.compute_seconds > 0 for t in job.tasks)
    assert (SHIPPED / "SOURCES.md").is_file() and (SHIPPED / "LICENSE-LGPL-3.0").is_file()


def test_a_written_trace_gives_runtimes_memory_edges_and_transfer_times(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(_trace(
        [{"id": "a", "runtime": 10, "memory": 512 * 2**20, "out": ["f1", "f2"]},
         {"id": "b", "runtime": 5, "parents": ["a"], "in": ["f1"]},
         {"id": "c", "runtime": 0, "parents": ["a", "b"]}],
        files=[{"id": "f1", "sizeInBytes": 2_000_000_000}, {"id": "f2", "sizeInBytes": 7}])))
    job = load_workflow(path, default_memory_mb=64)
    tasks = {t.id: t for t in job.tasks}
    assert tasks["mine/a"].compute_seconds == 10 and tasks["mine/a"].memory_mb == 512
    assert tasks["mine/b"].memory_mb == 64  # no memory recorded: the default
    assert tasks["mine/c"].compute_seconds > 0  # a zero runtime still takes a step
    edges = {(a, b): c for a, b, c in job.edges}
    assert edges == {("mine/a", "mine/b"): 2.0, ("mine/a", "mine/c"): 0.0, ("mine/b", "mine/c"): 0.0}


@pytest.mark.parametrize("trace, field", [
    (_trace([{"id": "a"}]), "workflow.execution.tasks[0].runtimeInSeconds"),
    (_trace([{"id": "a", "runtime": -1}]), "workflow.execution.tasks[0].runtimeInSeconds"),
    (_trace([{"id": "a", "runtime": 1, "parents": ["ghost"]}]), "workflow.specification.tasks[0].parents"),
    (_trace([{"id": "a", "runtime": 1, "parents": ["b"]}, {"id": "b", "runtime": 1, "parents": ["a"]}]), "cycle"),
    (_trace([{"id": "a", "runtime": 1}], version="0.2"), "schemaVersion"),
    ({"schemaVersion": "1.5", "workflow": {"execution": {}}}, "workflow.specification"),
])
def test_a_malformed_trace_is_refused_naming_the_file_and_field(tmp_path, trace, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(trace))
    with pytest.raises(WorkflowError) as err:
        load_workflow(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_a_directory_with_a_file_that_is_not_a_trace_is_refused(tmp_path):
    (tmp_path / "ok.json").write_text(json.dumps(_trace([{"id": "a", "runtime": 1}])))
    (tmp_path / "notes.json").write_text("{not json")
    with pytest.raises(WorkflowError, match="notes.json"):
        load_directory(tmp_path)
    with pytest.raises(WorkflowError, match="no \\*.json"):
        load_directory(tmp_path / "missing")
