"""Which study and trial states are in flight and which are final (one table for the gateway)."""
from __future__ import annotations

from openautoglm.v1 import common_pb2

S = common_pb2
IN_FLIGHT = (S.TRIAL_STATUS_QUEUED, S.TRIAL_STATUS_TRAINING, S.TRIAL_STATUS_EVALUATING)
TERMINAL_TRIAL = (S.TRIAL_STATUS_SUCCEEDED, S.TRIAL_STATUS_FAILED, S.TRIAL_STATUS_CANCELLED, S.TRIAL_STATUS_PRUNED)
TERMINAL_STUDY = (S.STUDY_STATE_COMPLETED, S.STUDY_STATE_FAILED, S.STUDY_STATE_CANCELLED)
# How a watcher's change names each state a study can enter after it is created.
STATE_NAME = {
    S.STUDY_STATE_RUNNING: "running",
    S.STUDY_STATE_COMPLETED: "completed",
    S.STUDY_STATE_FAILED: "failed",
    S.STUDY_STATE_CANCELLED: "cancelled",
}
