"""Serving a tuned model: Predict throughput and latency with dynamic batching on and off.

    python benchmarks/serving.py [--quick] [--json] [--seconds S] [--clients 1,8,32] [--model tiny|minilm]

It starts the embedded stack (a real NATS server, the five services as processes, mutual TLS),
tunes a built-in model on the sentiment demo set (`tiny`, the default: a 2-trial study; `minilm`:
one trial of the all-MiniLM-L6-v2 encoder), registers its best trial, and deploys it twice on
the trainer:

- **batched**: dynamic batching with the trainer's defaults: up to 32 inputs per forward pass,
  each batch taking what queued while the previous one ran (no added wait);
- **unbatched**: max_batch 1, one forward pass per input: the baseline dynamic batching is
  measured against (as in Clipper and Triton's own comparisons), on the same server, model and
  machine, in the same run.

For each, `N` concurrent clients (1, 8 and 32) call Models.Predict through the gateway (the
public path: API key, TLS, the gateway, the trainer's ModelServer) with one input per call, in a
closed loop, for `--seconds` per level (20; 3 with --quick). Every input is new (a counter in
the text), so no answer comes from the cache. Latency is measured per call, from send to reply.
Last, `cache_hit`: one client repeating one input 300 times (50 with --quick); every answer
after the first comes from the cache.

The last line with --json is one JSON object:
{"batched": {"1": {"rps", "p50_ms", "p99_ms"}, "8": {...}, "32": {...}}, "unbatched": {...},
 "cache_hit": {"p50_ms"}, "throughput_ratio_32": batched rps / unbatched rps at 32 clients,
 "p99_32_over_unbatched_p99_1": batched p99 at 32 / unbatched p99 at 1}.
Goals (issue 12): throughput_ratio_32 >= 3, p99_32_over_unbatched_p99_1 <= 2.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from openautoglm.client import Client  # noqa: E402
from openautoglm.common.spec.protos import spec_to_proto  # noqa: E402
from openautoglm.common.spec.schema import validate_dict  # noqa: E402
from openautoglm.common.stack import EmbeddedStack  # noqa: E402
from openautoglm.v1 import common_pb2, models_pb2  # noqa: E402

MODEL = "serving-benchmark"
WORDS = ["great", "awful", "lovely", "dull", "fine", "bad", "superb", "boring"]


def _spec(model: str) -> common_pb2.StudySpec:
    """Two trials of the tiny model, or one of MiniLM (an encoder about 50x its size)."""
    rates = [0.003, 0.001] if model == "tiny" else [0.0005]
    return spec_to_proto(validate_dict({
        "name": MODEL, "task": "classification", "dataset": {"builtin": "sentiment-demo", "max_examples": 300},
        "model": {"builtin": model},
        "search_space": {"templates": [{"id": "plain", "text": "Review: {input} Sentiment:"}],
                         "hyperparameters": {"epochs": {"type": "choice", "values": [2 if model == "tiny" else 1]},
                                             "learning_rate": {"type": "choice", "values": rates}}},
        "objective": {"terms": {"accuracy": 1.0}}, "strategy": "grid", "budget": {"max_trials": len(rates)}, "seed": 5,
    }))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _registered(client: Client, study: common_pb2.Study) -> models_pb2.ModelVersion:
    """The version the gateway registers for a completed study's best trial, once READY."""
    for _ in range(600):
        for version in await client.list_models(MODEL):
            if version.study_id == study.id:
                return await client.wait_ready(models_pb2.ModelRef(name=MODEL, version=version.version))
        await asyncio.sleep(0.5)
    raise SystemExit("the best trial was not registered")


async def _level(clients: list[Client], ref: models_pb2.ModelRef, concurrency: int, seconds: float, tag: str) -> dict:
    """`concurrency` closed-loop callers for `seconds`; rps and latency percentiles."""
    latencies: list[float] = []
    counter = 0
    stop_at = time.perf_counter() + seconds

    async def caller(index: int) -> None:
        nonlocal counter
        client = clients[index % len(clients)]
        while time.perf_counter() < stop_at:
            counter += 1
            text = f"the film was {WORDS[counter % len(WORDS)]} and {WORDS[(counter // 8) % len(WORDS)]} {tag} {counter}"
            started = time.perf_counter()
            await client.predict(ref, [text])
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - began
    return {"rps": round(len(latencies) / elapsed, 1), "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2), "calls": len(latencies)}


async def run(seconds: float, levels: list[int], cache_calls: int, model: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="autoglm-serving-bench-") as tmp:
        stack = EmbeddedStack(Path(tmp))
        await stack.start()
        try:
            clients = [Client(channel=stack.gateway_channel()) for _ in range(4)]
            study = await clients[0].wait((await clients[0].submit(_spec(model))).id)
            if study.state != common_pb2.STUDY_STATE_COMPLETED:
                raise SystemExit(f"the tuning study ended {study.state}: {study.error}")
            version = await _registered(clients[0], study)
            ref = models_pb2.ModelRef(name=MODEL, version=version.version)
            report: dict = {"model": f"{MODEL}:{version.version}", "base_model": model, "levels": levels, "seconds_per_level": seconds}
            for mode, max_batch in (("batched", 0), ("unbatched", 1)):
                await clients[0].models.Deploy(models_pb2.DeployRequest(model=ref, max_batch=max_batch), timeout=600)
                await _level(clients, ref, 4, 1.0, f"warm-{mode}")  # first calls pay one-time costs
                report[mode] = {str(n): await _level(clients, ref, n, seconds, mode) for n in levels}
                await clients[0].undeploy(ref)
            await clients[0].deploy(ref)
            repeated = "the film was great and fine, a repeat"
            await clients[0].predict(ref, [repeated])
            hits = []
            for _ in range(cache_calls):
                started = time.perf_counter()
                answer = (await clients[0].predict(ref, [repeated]))[0]
                hits.append(time.perf_counter() - started)
                assert answer.cached
            report["cache_hit"] = {"p50_ms": round(statistics.median(hits) * 1000, 2),
                                   "p99_ms": round(_percentile(hits, 0.99) * 1000, 2)}
            top, one = str(max(levels)), str(min(levels))
            report["throughput_ratio_32"] = round(report["batched"][top]["rps"] / report["unbatched"][top]["rps"], 2)
            report["p99_32_over_unbatched_p99_1"] = round(report["batched"][top]["p99_ms"] / report["unbatched"][one]["p99_ms"], 2)
            for client in clients:
                await client.close()
            return report
        finally:
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per level (CI)")
    parser.add_argument("--json", action="store_true", help="print the JSON summary last")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--model", choices=["tiny", "minilm"], default="tiny",
                        help="the built-in model tuned and served (minilm: more compute per input)")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 20.0)
    levels = [int(n) for n in args.clients.split(",")]
    report = asyncio.run(run(seconds, levels, 50 if args.quick else 300, args.model))
    for mode in ("batched", "unbatched"):
        for n in levels:
            figures = report[mode][str(n)]
            print(f"{mode:>9} {n:>3} clients: {figures['rps']:8.1f} req/s  p50 {figures['p50_ms']:7.2f} ms  "
                  f"p99 {figures['p99_ms']:7.2f} ms  ({figures['calls']} calls)", file=sys.stderr)
    print(f"cache hit: p50 {report['cache_hit']['p50_ms']} ms; batched/unbatched throughput at {max(levels)} clients: "
          f"{report['throughput_ratio_32']}x; batched p99 at {max(levels)} / unbatched p99 at {min(levels)}: "
          f"{report['p99_32_over_unbatched_p99_1']}x", file=sys.stderr)
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
