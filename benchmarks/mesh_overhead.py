"""What the mesh itself costs: a study run through all five services against the same trials run
in one process.

    python benchmarks/mesh_overhead.py [--quick] [--json] [--trainer-threads N]

It starts the embedded stack (a real NATS server, the five services as processes, one trainer
slot) with tracing to an in-process OTLP receiver, runs a TPE study on the built-in tiny model
(24 trials; 8 with --quick), and reads off the trainer's `train` spans and the mesh's traffic:

- `idle_share`: share of the time between the first training start and the last training end
  in which no trial trains (the trainer waits for the mesh);
- `median_gap_ms`: median pause between one training's end and the next one's start;
- `mean_trial_ms`: mean duration of a `train` span;
- `messages_per_trial`: the mesh's own RPCs (gRPC server spans of every service but the public
  Studies API) plus NATS messages on `autoglm.*` (seen by a wiretap subscription), per trial;
  per-epoch progress reports, heartbeats and cluster announcements are not counted (one
  "started" progress report per trial is), nor is JetStream's own protocol traffic (the acks
  consumers send are reported apart, as `jetstream_acks_per_trial`);
- `in_process_ratio`: the study's wall time (CreateStudy to its end) divided by the wall time of
  the same trials (same candidates, same jobs) trained by `trainer.core.run_trial` and scored by
  `evaluator.metrics.evaluate` one after another in this process, measured in the same run, with
  every core (torch's default threads) and nothing else running.

Where the ratio comes from, also reported:
- `coordination_share`: share of the study's wall time in which the trainer is not training
  (start-up, gaps, the last scoring): what the mesh's messages and scheduling cost;
- `in_process_trainer_threads_wall_s` / `in_process_ratio_trainer_threads`: the same in-process
  trials with the thread count the mesh's trainer trains with (the embedded stack leaves the
  other services and NATS one core), which separates the cost of sharing the machine from the
  mesh's own.

Goals (issue 9): idle_share <= 0.05, messages_per_trial <= 8, in_process_ratio <= 1.10.
The last line with --json is one JSON object with these figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from openautoglm.common.stack import EmbeddedStack
from openautoglm.common.trace_sink import OtlpReceiver
from openautoglm.trainer.core import TrialJob
from openautoglm.v1 import common_pb2, events_pb2, studies_pb2, studies_pb2_grpc

SPAN_KIND_SERVER = 2
PUBLIC_API = "/openautoglm.v1.Studies/"
# Periodic cluster traffic, not caused by any one trial.
NOT_PER_TRIAL = ("autoglm.trainer.heartbeat", "autoglm.cluster.changed")


def study_spec(trials: int) -> dict:
    """A TPE study on the tiny model whose trials are short, so the mesh's own cost shows."""
    return {
        "name": "mesh-overhead",
        "task": "classification",
        "dataset": {"builtin": "sentiment-demo", "max_examples": 320},
        "model": {"builtin": "tiny"},
        "search_space": {
            "templates": [{"id": "plain", "text": "Review: {input} Sentiment:"},
                          {"id": "asked", "text": "{question} {input}"}],
            "variables": {"question": ["How does this feel?", "What is the tone?"]},
            "hyperparameters": {"learning_rate": {"type": "loguniform", "low": 0.0005, "high": 0.01},
                                "epochs": {"type": "choice", "values": [2, 3]},
                                "batch_size": {"type": "choice", "values": [16, 32]}},
        },
        "objective": {"terms": {"accuracy": 0.5, "macro_f1": 0.5}},
        "strategy": "tpe",
        "budget": {"max_trials": trials},
        "seed": 11,
    }


def spec_proto(spec: dict) -> common_pb2.StudySpec:
    from openautoglm.common.spec.protos import spec_to_proto
    from openautoglm.common.spec.schema import validate_dict

    return spec_to_proto(validate_dict(spec))


class Wiretap:
    """Counts the messages on `autoglm.>` by subject (a plain core-NATS subscription sees
    JetStream-published messages too)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.progress_reports = 0
        self.acks = 0

    async def start(self, stack: EmbeddedStack) -> None:
        # As the stack's operator: the one NATS user that may listen to every subject.
        self.nc = await stack.nats_connect("mesh-overhead-wiretap")

        async def count(msg) -> None:
            subject = msg.subject
            if subject == "autoglm.trial.progress":
                progress = events_pb2.TrialProgressEvent.FromString(msg.data).progress
                if progress.step or progress.has_intermediate:
                    self.progress_reports += 1  # a progress report, not counted as a message
                    return
            self.counts[subject] = self.counts.get(subject, 0) + 1

        async def ack(msg) -> None:
            self.acks += 1

        await self.nc.subscribe("autoglm.>", cb=count)
        await self.nc.subscribe("$JS.ACK.>", cb=ack)
        await self.nc.flush()

    async def stop(self) -> None:
        await self.nc.close()

    def per_trial_messages(self) -> int:
        return sum(n for subject, n in self.counts.items() if not subject.startswith(NOT_PER_TRIAL))


def intervals_report(spans: list[dict]) -> dict:
    """idle share, gaps and mean length of the trainer's `train` spans."""
    train = sorted((s["start_ns"], s["end_ns"]) for s in spans if s["service"] == "trainer" and s["name"] == "train")
    if not train:
        raise SystemExit("no train spans were received")
    busy, gaps = 0, []
    cover_end = train[0][0]
    for start, end in train:
        if start > cover_end:
            gaps.append(start - cover_end)
        busy += max(0, end - max(start, cover_end))
        cover_end = max(cover_end, end)
    window = train[-1][1] - train[0][0]
    window = max(window, max(end for _, end in train) - train[0][0])
    return {
        "trainings": len(train),
        "idle_share": round(1 - busy / window, 4),
        "median_gap_ms": round(statistics.median(gaps) / 1e6, 1) if gaps else 0.0,
        "mean_trial_ms": round(statistics.mean((e - s) for s, e in train) / 1e6, 1),
        "longest_gaps_ms": [round(g / 1e6, 1) for g in sorted(gaps, reverse=True)[:5]],
    }


def in_process_seconds(study: common_pb2.Study, threads: int = 0) -> float:
    """The study's trials, trained and scored one after another in this process (with `threads`
    torch threads; 0: torch's default, every core)."""
    from openautoglm.evaluator import metrics
    from openautoglm.evaluator.metrics import evaluate
    from openautoglm.trainer import models
    from openautoglm.trainer.core import run_trial
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads)
    spec = study.spec
    terms = {t.metric: t.weight for t in spec.objective.terms}
    trials = sorted(study.trials, key=lambda t: t.number)
    with tempfile.TemporaryDirectory(prefix="autoglm-inproc-") as tmp:
        # Warm, as the services are before a study: libraries loaded and one trial run, untimed.
        models.preload()
        metrics.warm_up()
        run_trial(job_of(study, trials[0]), Path(tmp) / "warm-up")
        started = time.perf_counter()
        for trial in trials:
            job = job_of(study, trial)
            result = run_trial(job, Path(tmp))
            evaluate(job.task, result.predictions, result.references, objective=terms, model_metrics=result.model_metrics)
        elapsed = time.perf_counter() - started
    torch.set_num_threads(default_threads)
    return elapsed


def job_of(study: common_pb2.Study, trial: common_pb2.Trial) -> TrialJob:
    """The job the gateway sends a trainer for this trial."""
    from openautoglm.common.spec.protos import param_from_proto, task_name

    spec = study.spec
    return TrialJob(
        study_id=study.id, trial_id=trial.id, task=task_name(spec.task), prompt=trial.candidate.prompt,
        hyperparameters={k: param_from_proto(v) for k, v in trial.candidate.hyperparameters.items()},
        dataset_builtin=spec.dataset.builtin, eval_fraction=spec.dataset.eval_fraction,
        max_examples=spec.dataset.max_examples, model_builtin=spec.model.builtin, seed=spec.seed,
        max_length=spec.training.max_length,
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_mesh(trials: int, data_dir: Path, receiver: OtlpReceiver,
                   trainer_threads: int) -> tuple[common_pb2.Study, float, Wiretap, dict[str, float]]:
    # Spans leave each service in batches on OpenTelemetry's default schedule (every 5 s), as in
    # production; the last batch is flushed when the stack stops, before the spans are read.
    stack = EmbeddedStack(data_dir, env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true",
    }, trainer_threads=trainer_threads)
    await stack.start()
    tap = Wiretap()
    try:
        await tap.start(stack)
        async with stack.gateway_channel() as channel:
            stub = studies_pb2_grpc.StudiesStub(channel)
            cpu_before = {name: cpu_seconds(proc.pid) for name, proc in stack.processes.items()}
            started = time.perf_counter()
            study = (await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec_proto(study_spec(trials))), timeout=60)).study
            async for update in stub.WatchStudy(studies_pb2.WatchStudyRequest(study_id=study.id), timeout=900):
                study = update.study
            wall = time.perf_counter() - started
            cpu = {name: round(cpu_seconds(proc.pid) - cpu_before[name], 2) for name, proc in stack.processes.items()}
        await tap.stop()
    finally:
        stack.stop()  # each service flushes its last span batch as it stops
    if study.state != common_pb2.STUDY_STATE_COMPLETED:
        raise SystemExit(f"the study ended {common_pb2.StudyState.Name(study.state)}: {study.error}")
    return study, wall, tap, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 trials instead of 24")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--trainer-threads", type=int, default=0,
                        help="the trainer's CPU threads (default: the embedded stack's, every core but one)")
    args = parser.parse_args()
    trials = 8 if args.quick else 24
    trainer_threads = args.trainer_threads or max(1, (os.cpu_count() or 2) - 1)
    receiver = OtlpReceiver().start()
    with tempfile.TemporaryDirectory(prefix="autoglm-mesh-") as tmp:
        study, mesh_wall, tap, cpu = asyncio.run(run_mesh(trials, Path(tmp), receiver, trainer_threads))
    spans = receiver.all_spans()
    receiver.stop()
    rpcs = [s for s in spans if s["kind"] == SPAN_KIND_SERVER and s["name"].startswith("/openautoglm.v1.")
            and not s["name"].startswith(PUBLIC_API)]
    rpc_counts: dict[str, int] = {}
    for span in rpcs:
        rpc_counts[span["name"]] = rpc_counts.get(span["name"], 0) + 1
    done = len(study.trials)
    report = {
        "trials": done,
        **intervals_report(spans),
        "messages_per_trial": round((len(rpcs) + tap.per_trial_messages()) / done, 2),
        "rpcs": dict(sorted(rpc_counts.items())),
        "nats_messages": dict(sorted(tap.counts.items())),
        "progress_reports_not_counted": tap.progress_reports,
        "jetstream_acks_per_trial": round(tap.acks / done, 2),
        "mesh_wall_s": round(mesh_wall, 2),
        # CPU seconds each process used during the study (2 cores: whatever is not the trainer's
        # competes with training).
        "cpu_s": cpu,
    }
    train_seconds = sum(s["end_ns"] - s["start_ns"] for s in spans if s["service"] == "trainer" and s["name"] == "train") / 1e9
    report["coordination_share"] = round(max(0.0, 1 - train_seconds / mesh_wall), 4)
    report["trainer_threads"] = trainer_threads
    in_process = in_process_seconds(study)
    report["in_process_wall_s"] = round(in_process, 2)
    report["in_process_ratio"] = round(mesh_wall / in_process, 3)
    same_threads = in_process_seconds(study, trainer_threads)
    report["in_process_trainer_threads_wall_s"] = round(same_threads, 2)
    report["in_process_ratio_trainer_threads"] = round(mesh_wall / same_threads, 3)
    print(f"{done} trials through the mesh in {mesh_wall:.2f} s; the same trials in one process in {in_process:.2f} s "
          f"(ratio {report['in_process_ratio']:.3f}, goal <= 1.10)")
    print(f"with the trainer's {trainer_threads} thread(s) in process too: {same_threads:.2f} s "
          f"(ratio {report['in_process_ratio_trainer_threads']:.3f}); the mesh coordinates "
          f"{report['coordination_share']:.1%} of its wall time (the trainer is not training)")
    print(f"trainer idle {report['idle_share']:.1%} of the time between the first and last training "
          f"(goal <= 5%); median gap {report['median_gap_ms']} ms; mean trial {report['mean_trial_ms']} ms")
    print(f"messages per trial: {report['messages_per_trial']} (goal <= 8)")
    for name, count in report["rpcs"].items():
        print(f"  rpc  {name:<45} {count}")
    for name, count in report["nats_messages"].items():
        print(f"  nats {name:<45} {count}")
    if args.json:
        print(json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
