"""Real workflow execution traces as scheduler jobs: any WfFormat 1.5 file (the WfCommons
instance format: https://github.com/wfcommons/WfFormat) becomes a `Job`.

What is read, and nothing else:
- `workflow.specification.tasks[]`: `id`, `parents` (and `children`, cross-checked), `inputFiles`,
  `outputFiles`;
- `workflow.specification.files[]`: `id`, `sizeInBytes` (an edge's transfer time is the size of
  the files the parent writes and the child reads, over `bandwidth_bytes_per_s`);
- `workflow.execution.tasks[]`: `runtimeInSeconds`, and `memoryInBytes` where it was recorded.

A malformed file is refused with a `WorkflowError` naming the file and the JSON path of the
problem. Plain `json` only: the `wfcommons` package would try to download its schema.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from openautoglm.gnn_scheduler.dags import Job
from openautoglm.gnn_scheduler.graph import PlanError, TaskNode, topological_order

# Data moves between workers at this rate unless told otherwise (1 GB/s, a datacentre link).
DEFAULT_BANDWIDTH = 1e9
# A task recorded with no runtime still takes a scheduling step.
MIN_RUNTIME_SECONDS = 0.01


class WorkflowError(ValueError):
    """A file that is not a WfFormat 1.5 execution trace; the message names the file and field."""


def load_workflow(path: str | Path, job_id: str | None = None, bandwidth_bytes_per_s: float = DEFAULT_BANDWIDTH,
                  default_memory_mb: float = 0.0) -> Job:
    """One trace as a Job (task ids `<job id>/<task id>`); `default_memory_mb` for tasks with no
    recorded memory (0: unknown, fits anywhere)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WorkflowError(f"{path}: not readable JSON ({err})") from None
    job_id = job_id or path.stem

    def need(obj, key: str, where: str, kind: type | tuple[type, ...]):
        value = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(value, kind):
            raise WorkflowError(f"{path}: {where}.{key}: missing or not a {getattr(kind, '__name__', 'valid value')}")
        return value

    version = str(data.get("schemaVersion", "")) if isinstance(data, dict) else ""
    if not version.startswith("1."):
        raise WorkflowError(f"{path}: schemaVersion {version or '(none)'!r}; expected WfFormat 1.x (1.5)")
    workflow = need(data, "workflow", "$", dict)
    spec = need(workflow, "specification", "workflow", dict)
    execution = need(workflow, "execution", "workflow", dict)
    spec_tasks = need(spec, "tasks", "workflow.specification", list)
    sizes = {}
    for i, f in enumerate(spec.get("files") or []):
        file_id = need(f, "id", f"workflow.specification.files[{i}]", str)
        size = f.get("sizeInBytes", 0)
        sizes[file_id] = float(size) if isinstance(size, (int, float)) and size >= 0 else 0.0
    runs = {}
    for i, t in enumerate(need(execution, "tasks", "workflow.execution", list)):
        runs[need(t, "id", f"workflow.execution.tasks[{i}]", str)] = (i, t)
    if not spec_tasks:
        raise WorkflowError(f"{path}: workflow.specification.tasks: empty")
    tasks, outputs, inputs, parents = [], {}, {}, {}
    for i, t in enumerate(spec_tasks):
        where = f"workflow.specification.tasks[{i}]"
        tid = need(t, "id", where, str)
        if tid not in runs:
            raise WorkflowError(f"{path}: {where}: task {tid!r} has no workflow.execution.tasks entry (not an execution trace)")
        run_index, run = runs[tid]
        runtime = run.get("runtimeInSeconds")
        if not isinstance(runtime, (int, float)) or not math.isfinite(runtime) or runtime < 0:
            raise WorkflowError(f"{path}: workflow.execution.tasks[{run_index}].runtimeInSeconds: missing or not a number >= 0")
        memory = run.get("memoryInBytes")
        memory_mb = memory / 2**20 if isinstance(memory, (int, float)) and memory > 0 else default_memory_mb
        tasks.append(TaskNode(f"{job_id}/{tid}", max(float(runtime), MIN_RUNTIME_SECONDS), memory_mb,
                              str(t.get("category") or t.get("name") or "")))
        parents[tid] = need(t, "parents", where, list) if "parents" in t else []
        outputs[tid] = set(t.get("outputFiles") or [])
        inputs[tid] = set(t.get("inputFiles") or [])
    edges = []
    for i, t in enumerate(spec_tasks):
        child = t["id"]
        for parent in dict.fromkeys(parents[child]):  # a parent named twice is one dependency
            if parent not in runs or parent not in outputs:
                raise WorkflowError(f"{path}: workflow.specification.tasks[{i}].parents: unknown task {parent!r}")
            moved = sum(sizes.get(f, 0.0) for f in outputs[parent] & inputs[child])
            edges.append((f"{job_id}/{parent}", f"{job_id}/{child}", moved / bandwidth_bytes_per_s))
    try:
        topological_order(tasks, edges)
    except PlanError as err:
        raise WorkflowError(f"{path}: workflow.specification.tasks: {err}") from None
    return Job(job_id, tasks, edges)


def load_directory(directory: str | Path, **options) -> list[Job]:
    """Every `*.json` file of a directory (sorted by name) as a Job; a file that is not a trace
    is refused (WorkflowError), never skipped silently."""
    files = sorted(Path(directory).glob("*.json"))
    if not files:
        raise WorkflowError(f"{directory}: no *.json workflow traces")
    return [load_workflow(f, **options) for f in files]
