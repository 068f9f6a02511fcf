"""Exporting a trained model: safetensors (as saved) and ONNX with dynamic batch and sequence
axes, checked against torch on a probe batch with onnxruntime.

`export` runs the exporter in a child process (`python -m openautoglm.trainer.export`): torch's
dynamo-based ONNX exporter edits process-wide torch.fx state, and a training thread of the same
process that calls into torch meanwhile failed inside torch (KeyError 'custom' from
torch.fx.traceback.annotate, seen on a trainer registering a model while it trained a trial).

    python -m openautoglm.trainer.export ARTIFACT OUTPUT_DIR [--opset N]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import torch

from openautoglm.common.parent_death import PARENT_PID_VARIABLE, exit_with_parent


# One export at a time per trainer: ExportBest and a registration may export the same trial
# together, and each is seconds of every core.
_EXPORT_LOCK = threading.Lock()
# The child's exit status for an artifact that cannot be exported as asked (ExportError).
EXIT_EXPORT_ERROR = 3


class ExportError(ValueError):
    """The artifact cannot be exported as asked."""


class _LogitsOnly(torch.nn.Module):
    """Export wrapper: (input_ids, attention_mask) -> logits, no cache or dict outputs."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def load_artifact(artifact: Path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if not (artifact / "config.json").is_file():
        raise ExportError(f"{artifact} is not a saved model (no config.json)")
    config = AutoConfig.from_pretrained(artifact)
    architectures = config.architectures or []
    loader = AutoModelForSequenceClassification if any("SequenceClassification" in a for a in architectures) else AutoModelForCausalLM
    model = loader.from_pretrained(artifact, attn_implementation="eager")
    return AutoTokenizer.from_pretrained(artifact), model.eval()


def export(artifact: str | Path, output_dir: str | Path | None = None, opset: int = 18) -> tuple[list[Path], float]:
    """Write model.safetensors (+ config, tokenizer) and model.onnx into output_dir.

    Returns the files and the largest |onnxruntime - torch| logit difference on a probe batch
    of a different batch size and length than the export sample (so the axes really are dynamic).
    Runs in a child process (see the module's docstring); raises ExportError for an artifact
    that is not a saved model, RuntimeError when the exporter fails.
    """
    out = Path(output_dir) if output_dir else Path(artifact) / "export"
    with _EXPORT_LOCK:
        # The child ends with this process (a trainer stopped mid-export does not leave it behind).
        done = subprocess.run([sys.executable, "-m", "openautoglm.trainer.export", str(artifact), str(out), "--opset", str(opset)],
                              capture_output=True, text=True, env={**os.environ, PARENT_PID_VARIABLE: str(os.getpid())})
    if done.returncode == EXIT_EXPORT_ERROR:
        raise ExportError(done.stderr.strip().splitlines()[-1])
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"the ONNX export failed (exit {done.returncode}): {tail}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return [Path(f) for f in result["files"]], float(result["max_abs_diff"])


def _export(artifact: str | Path, output_dir: str | Path | None, opset: int) -> tuple[list[Path], float]:
    import onnxruntime

    artifact = Path(artifact)
    out = Path(output_dir) if output_dir else artifact / "export"
    out.mkdir(parents=True, exist_ok=True)
    tokenizer, model = load_artifact(artifact)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (artifact / name).exists():
            shutil.copy2(artifact / name, out / name)
    wrapper = _LogitsOnly(model).eval()
    vocab = model.config.vocab_size
    sample = (torch.randint(5, vocab, (2, 7)), torch.ones(2, 7, dtype=torch.long))
    onnx_path = out / "model.onnx"
    axes = {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("sequence", min=2, max=4096)}
    torch.onnx.export(
        wrapper, sample, str(onnx_path), input_names=["input_ids", "attention_mask"], output_names=["logits"],
        dynamic_shapes={"input_ids": axes, "attention_mask": axes}, opset_version=opset, dynamo=True,
        external_data=False, verbose=False,
    )
    probe_ids = torch.randint(5, vocab, (3, 11))
    probe_mask = torch.ones_like(probe_ids)
    with torch.no_grad():
        expected = wrapper(probe_ids, probe_mask).numpy()
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input_ids": probe_ids.numpy(), "attention_mask": probe_mask.numpy()})[0]
    diff = float(np.max(np.abs(got - expected)))
    files = sorted(p for p in out.iterdir() if p.is_file())
    return files, diff


def main() -> None:
    parser = argparse.ArgumentParser(description="Export one saved model (the trainer runs this as a child process).")
    parser.add_argument("artifact")
    parser.add_argument("output_dir")
    parser.add_argument("--opset", type=int, default=18)
    args = parser.parse_args()
    exit_with_parent()
    try:
        files, diff = _export(args.artifact, args.output_dir, args.opset)
    except ExportError as err:
        print(err, file=sys.stderr)
        sys.exit(EXIT_EXPORT_ERROR)
    print(json.dumps({"files": [str(f) for f in files], "max_abs_diff": diff}))


if __name__ == "__main__":
    main()
