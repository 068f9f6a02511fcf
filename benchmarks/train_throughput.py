"""Training throughput of the trainer's own loop (loop.train) per precision.

    python benchmarks/train_throughput.py [--quick] [--json] [--steps N]

Each precision runs in a fresh subprocess (so its peak memory is its own) on a GLM-style causal
LM of ~100M parameters (--quick: ~6M, CPU-friendly) with random tokens. Reports tokens/s and
peak memory for fp32, bf16 and fp16 (fp16 only on CUDA; null where not run), the bf16/fp32
speed ratio measured in the same run, and on a GPU the model FLOPs utilisation against the
card's dense bf16 peak (6·N·tokens/s plus attention, as nanoGPT/PaLM count it).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from openautoglm.trainer import loop

# Dense bf16 tensor-core peaks (FLOP/s) by device-name fragment.
PEAK_BF16 = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
FULL = dict(hidden=768, layers=12, heads=12, intermediate=2048, vocab=8192, seq=512, batch=8, steps=30)
QUICK = dict(hidden=256, layers=4, heads=4, intermediate=688, vocab=4096, seq=128, batch=4, steps=6)


def build(shape: dict):
    from transformers import GlmConfig, GlmForCausalLM

    config = GlmConfig(
        vocab_size=shape["vocab"], hidden_size=shape["hidden"], intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"], num_key_value_heads=shape["heads"],
        head_dim=shape["hidden"] // shape["heads"], max_position_embeddings=shape["seq"] * 2, pad_token_id=0,
        eos_token_id=1, bos_token_id=1,
    )
    return GlmForCausalLM(config)


def run_one(precision: str, shape: dict) -> dict:
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    torch.manual_seed(0)
    model = build(shape).to(device)
    params = sum(p.numel() for p in model.parameters())
    n = shape["batch"] * shape["steps"]
    data = torch.randint(2, shape["vocab"], (n, shape["seq"]))

    def make_batch(idx):
        ids = data[idx]
        return {"input_ids": ids, "labels": ids}

    def train(steps: int) -> float:
        cfg = loop.LoopConfig(epochs=1, batch_size=shape["batch"], learning_rate=1e-4, precision=precision, seed=0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loop.train(model, [shape["seq"]] * (steps * shape["batch"]), make_batch, cfg, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    train(2)  # warm-up: allocator, kernels, autocast caches
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = train(shape["steps"])
    tokens_per_s = shape["batch"] * shape["seq"] * shape["steps"] / seconds
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        name = torch.cuda.get_device_name()
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        name = "cpu"
    flops_per_token = 6 * params + 12 * shape["layers"] * shape["hidden"] * shape["seq"]
    return {"precision": precision, "device": name, "params": params, "tokens_per_s": tokens_per_s,
            "peak_mem_mb": peak_mb, "achieved_tflops": flops_per_token * tokens_per_s / 1e12}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small model, few steps: under a minute on a CPU")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one precision, print its JSON
    args = parser.parse_args()
    shape = dict(QUICK if args.quick else FULL)
    if args.steps:
        shape["steps"] = args.steps
    if args.one:
        print(json.dumps(run_one(args.one, shape)))
        return

    cuda = torch.cuda.is_available()
    results: dict[str, dict | None] = {}
    for precision in ("fp32", "bf16", "fp16"):
        if precision == "fp16" and not cuda:
            results[precision] = None
            continue
        cmd = [sys.executable, __file__, "--one", precision] + (["--quick"] if args.quick else [])
        if args.steps:
            cmd += ["--steps", str(args.steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[precision] = json.loads(out.stdout.strip().splitlines()[-1])
    first = results["fp32"]
    device = first["device"]
    peak = next((v for k, v in PEAK_BF16.items() if k in device), None)
    bf16 = results["bf16"]
    report = {
        "device": device,
        "params": first["params"],
        "shape": shape,
        "tokens_per_s": {k: (round(v["tokens_per_s"], 1) if v else None) for k, v in results.items()},
        "peak_mem_mb": {k: (round(v["peak_mem_mb"], 1) if v else None) for k, v in results.items()},
        "bf16_speedup_vs_fp32": round(bf16["tokens_per_s"] / first["tokens_per_s"], 3),
        "mfu": round(bf16["achieved_tflops"] * 1e12 / peak, 4) if (peak and cuda) else None,
    }
    print(f"device {device}, model {first['params'] / 1e6:.1f}M parameters, batch {shape['batch']} x {shape['seq']} tokens")
    for precision in ("fp32", "bf16", "fp16"):
        r = results[precision]
        print(f"  {precision}: " + (f"{r['tokens_per_s']:10.1f} tokens/s, peak {r['peak_mem_mb']:8.1f} MB" if r else "not run (needs CUDA)"))
    print(f"  bf16 / fp32 speed: {report['bf16_speedup_vs_fp32']:.2f}x   MFU (bf16): {report['mfu'] if report['mfu'] is not None else 'n/a (no GPU)'}")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
