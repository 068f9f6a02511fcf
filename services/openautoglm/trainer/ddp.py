"""Run one trial data-parallel across the GPUs of one machine (or CPU processes, with gloo).

    torchrun --nproc_per_node N -m openautoglm.trainer.ddp JOB.json RESULT.json \
        [ARTIFACTS_DIR [CHECKPOINTS_DIR [MEMORY_BUDGET_MB [STOP_FLAG_FILE]]]]

Every rank builds the same model from the same seed, and DDP keeps the ranks in step. Each
optimiser step's batch is split across the ranks. Only rank 0 reports, checkpoints, saves the
model and writes RESULT.json. The same checks as a single-process trial apply: the memory
budget is checked before training, rank 0 prints progress and per-epoch intermediate scores as
JSON lines (runner.py forwards them), and the trial stops (pruned) at the first step after
STOP_FLAG_FILE appears (all ranks agree on the step, loop._agreed_flags).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from openautoglm.trainer.core import TrialJob, run_trial


class FileFlag:
    """A stop flag the parent raises by creating a file (torchrun does not forward signals)."""

    def __init__(self, path: Path | None):
        self.path = path

    def is_set(self) -> bool:
        return self.path is not None and self.path.exists()


def main(argv: list[str]) -> None:
    job_file, result_file = Path(argv[0]), Path(argv[1])
    artifacts = Path(argv[2]) if len(argv) > 2 else result_file.parent / "artifacts"
    checkpoints = Path(argv[3]) if len(argv) > 3 else None
    memory_budget_mb = float(argv[4]) if len(argv) > 4 else None
    prune = FileFlag(Path(argv[5]) if len(argv) > 5 else None)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    job = TrialJob(**json.loads(job_file.read_text()))

    def progress(step: int, total: int, loss: float) -> None:  # rank 0 only (loop.train decides)
        print(json.dumps({"step": step, "total": total, "loss": loss}), flush=True)

    def intermediate(epoch: int, value: float) -> None:  # rank 0 only
        print(json.dumps({"epoch": epoch, "value": value}), flush=True)

    result = run_trial(job, artifacts, progress=progress, checkpoints_dir=checkpoints, free_memory_mb=memory_budget_mb,
                       intermediate=intermediate, prune=prune)
    if torch.distributed.is_initialized():
        rank = torch.distributed.get_rank()
        torch.distributed.destroy_process_group()
    else:
        rank = 0
    if rank == 0:
        result_file.write_text(json.dumps(asdict(result)))


if __name__ == "__main__":
    main(sys.argv[1:])
