"""Warm start: earlier trials checked against a study's search space, and prior-trials files."""
from __future__ import annotations

import json
from typing import Any
from pathlib import Path

from openautoglm.common.catalogue import MODEL_PARAM
from openautoglm.common.spec.schema import Scalar, SearchSpaceModel, SpecError, is_active
from openautoglm.common.spec.templates import INPUT_SLOT, is_clean_instruction, template_fields


def prior_params(space: SearchSpaceModel, template_id: str, variables: dict[str, str],
                 hyperparameters: dict[str, Scalar]) -> dict[str, Scalar]:
    """Check one earlier trial against a search space; returns its hyper-parameters as the
    space types them. Raises ValueError saying what does not match."""
    template = next((t for t in space.templates if t.id == template_id), None)
    if template is None:
        raise ValueError(f"template {template_id!r} is not in the search space")
    for name in sorted(template_fields(template.text) - {INPUT_SLOT}):
        chosen = variables.get(name)
        if chosen not in space.variables.get(name, []):
            raise ValueError(f"variable {name!r} = {chosen!r} is not one of its values in the search space")
    if space.instructions:
        text = variables.get("instruction_text") or ""
        # A study that writes instructions also takes ones an earlier search wrote.
        writes = space.instruction_edits is not None or space.instruction_writer is not None
        if text not in space.instructions and not (writes and is_clean_instruction(text)):
            raise ValueError(f"instruction {text!r} is not in the search space")
        if variables.get("instruction_position") not in space.instruction_position:
            raise ValueError(f"instruction position {variables.get('instruction_position')!r} is not in the search space")
    models = [m.key for m in space.models]
    unknown = sorted(set(hyperparameters) - set(space.hyperparameters) - ({MODEL_PARAM} if models else set()))
    if unknown:
        raise ValueError(f"hyper-parameter(s) {', '.join(unknown)} are not in the search space")
    out: dict[str, Scalar] = {}
    if models:
        if hyperparameters.get(MODEL_PARAM) not in models:
            raise ValueError(f"model {hyperparameters.get(MODEL_PARAM)!r} is not one of the search space's models")
        out[MODEL_PARAM] = hyperparameters[MODEL_PARAM]
    for name, hp in space.hyperparameters.items():
        if not is_active(hp, out):
            if name in hyperparameters:
                raise ValueError(f"hyper-parameter {name!r} is set but its condition {hp.when} does not hold")
            continue
        if name not in hyperparameters:
            raise ValueError(f"hyper-parameter {name!r} is missing")
        value = hyperparameters[name]
        if hp.type == "choice":
            if value not in hp.values:
                raise ValueError(f"hyper-parameter {name!r} = {value!r} is not one of {hp.values}")
        else:
            low, high = hp.bounds
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"hyper-parameter {name!r} = {value!r} is outside [{hp.low}, {hp.high}]")
            if hp.type == "int":
                step = hp.step or 1
                if value != int(value) or (int(value) - int(low)) % step:
                    raise ValueError(f"hyper-parameter {name!r} = {value!r} is not on the int grid")
                value = int(value)
        out[name] = value
    return out


def load_prior_trials(path: str | Path) -> list[dict[str, Any]]:
    """Prior trials from a file: JSON lines of {template_id, variables, hyperparameters,
    objective}, or a JSON object with a "trials" list as `openautoglm demo --json` prints
    (failed trials skipped). Each row gets its source "line". Raises SpecError naming the line."""
    path = Path(path).expanduser()
    text = path.read_text(encoding="utf-8")
    field = "warm_start.trials_path"
    rows = []
    stripped = text.lstrip()
    if stripped.startswith("{") and '"trials"' in stripped[:10000] and "\n{" not in stripped:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(field, f"not valid JSON ({err.msg})", line=err.lineno, file=str(path)) from None
        for i, trial in enumerate(document.get("trials", [])):
            if trial.get("objective") is None:
                continue
            candidate = trial.get("candidate", {})
            rows.append({"line": i + 1, "template_id": candidate.get("template_id", ""),
                         "variables": candidate.get("variables", {}), "hyperparameters": candidate.get("hyperparameters", {}),
                         "objective": trial["objective"]})
        return rows
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise SpecError(field, f"not valid JSON ({err.msg})", line=number, file=str(path)) from None
        if not isinstance(row, dict) or "template_id" not in row or not isinstance(row.get("objective"), (int, float)):
            raise SpecError(field, "each line needs template_id and a numeric objective", line=number, file=str(path))
        rows.append({"line": number, "template_id": row["template_id"], "variables": row.get("variables", {}),
                     "hyperparameters": row.get("hyperparameters", {}), "objective": float(row["objective"])})
    return rows
