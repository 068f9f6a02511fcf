"""A candidate's identity: the content hash of its prompt and hyper-parameters."""
from __future__ import annotations

import hashlib
import json

from openautoglm.common.spec.schema import Scalar


def candidate_id(prompt: str, hyperparameters: dict[str, Scalar]) -> str:
    """Content hash of a candidate: equal prompts and hyper-parameters give equal ids."""
    payload = json.dumps({"prompt": prompt, "hp": hyperparameters}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
