"""Load on the gateway: many API clients at once, and what one trial event costs it at trial 10
and at trial 1,000 of one study.

    python benchmarks/load.py [--quick] [--json] [--clients N] [--seconds S] [--per-client-rate R]
                              [--saturation-seconds S] [--trials N]

It starts the embedded stack (a real NATS server, the services as processes, mutual TLS) with no
trainer process. In its place an *instant trainer* (a NATS client with the trainer's identity)
takes every job placed on it and reports it trained at once with a random score, publishing the
same events a real trainer does (started, trained). Training costs nothing, so what is measured
is the mesh's own work per trial: the gateway's above all.

1. **Per-event CPU.** One random-search study of `--trials` + 20 trials runs alone. The
   gateway's CPU time (user + system, from /proc) is read when the instant trainer has reported
   trial 10 and trial 40, and trials N-30 and N. `cpu_ms_per_event` is the gateway's CPU per trial
   event over each window (a trial event: one trial's result, with all it sets off: the next
   proposal, placement, the progress event before it). Goal: the figure at trial 1,000 within 2x
   the one at trial 10 (no cost that grows with the study).
2. **Clients.** `--clients` concurrent clients (200; 50 with --quick) call the API over 8 TLS
   channels: GetStudy 70% (a random study of those created; the 1,000-trial one a page of 100
   trials at a time), ListStudies 18% (a page of 50), WatchStudy 10% (changes only; timed to
   its first message, then followed for up to 2 s) and CreateStudy 2% (a 2-trial study, which
   the instant trainer then runs). The clients run on the same two cores as the stack, so their
   own cost is in the latencies too. Two phases:
   - **paced** (`--seconds`: 60; 10 with --quick), the latencies reported: each client sends on
     its own Poisson schedule, `--per-client-rate` requests/s (1.25: a dashboard or CLI
     refreshing; 250 requests/s from 200 clients). A call's latency runs from when it was due,
     so a slow answer cannot hide the calls queued behind it (no coordinated omission, as in
     wrk2).
   - **saturated** (`--saturation-seconds`: 20; 5 with --quick): each client calls again as soon
     as its answer comes. This finds the most the gateway serves (`saturation.requests_per_s`).
     Its latencies are mostly queueing: with every client always waiting, Little's law makes
     the mean latency clients / throughput, whatever the gateway does.

The last line with --json is one JSON object: errors (calls that failed, any status, in both
phases), requests_per_s and offered_requests_per_s, per-method p50_ms/p99_ms (paced), saturation
{requests_per_s, errors, methods}, gateway_peak_rss_mb (VmHWM) and cpu_ms_per_event
{"10": x, "<N>": x}. Goals (issue 11): 0 errors, GetStudy p99 under 100 ms, cpu_ms_per_event at
trial 1,000 within 2x of trial 10.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

from openautoglm.common import events, subjects
from openautoglm.common.spec.protos import spec_to_proto
from openautoglm.common.spec.schema import validate_dict
from openautoglm.common.stack import EmbeddedStack
from openautoglm.common.tls import MeshIdentity
from openautoglm.v1 import common_pb2, events_pb2, scheduler_pb2, studies_pb2, studies_pb2_grpc, trainer_pb2

CLIENT_MIX = (("GetStudy", 0.70), ("ListStudies", 0.18), ("WatchStudy", 0.10), ("CreateStudy", 0.02))
CHANNELS = 8
CALL_TIMEOUT = 10.0
WINDOW = 30  # trial events per CPU window
HEARTBEAT_SECONDS = 1.0


def study_spec(trials: int, name: str = "load") -> common_pb2.StudySpec:
    """Random search over a continuous space: never exhausted, every proposal different."""
    return spec_to_proto(validate_dict({
        "name": name, "task": "classification",
        "dataset": {"builtin": "sentiment-demo", "max_examples": 200},
        "search_space": {
            "templates": [{"id": "plain", "text": "Review: {input} Sentiment:"},
                          {"id": "asked", "text": "{question} {input}"}],
            "variables": {"question": ["How does this feel?", "What is the tone?"]},
            "hyperparameters": {"learning_rate": {"type": "loguniform", "low": 0.0001, "high": 0.01},
                                "epochs": {"type": "choice", "values": [1, 2]}},
        },
        "objective": {"terms": {"accuracy": 1.0}},
        "strategy": "random",
        "budget": {"max_trials": trials},
        "seed": 5,
    }))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class InstantTrainer:
    """A trainer that trains nothing: each job placed on it is reported started and trained at
    once, with a random score, through the same NATS subjects and identity a trainer uses."""

    def __init__(self, stack: EmbeddedStack, worker_id: str = "instant", slots: int = 8):
        self.stack = stack
        self.worker_id = worker_id
        self.slots = slots
        self.reported = 0
        self.on_report: list[tuple[int, asyncio.Future[float]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._random = random.Random(0)

    async def start(self) -> None:
        self.bus = events.NatsBus(nc := await events.connect(
            self.stack.nats_url, "instant-trainer", MeshIdentity(self.stack.tls_dir, "trainer")), nc.jetstream())
        await self.bus.wait_for_stream(events.JOBS_STREAM_NAME)

        async def pong(msg) -> None:
            await msg.respond(b"")

        await nc.subscribe(subjects.ping_subject(self.worker_id), cb=pong)
        self.consumer = events.DurableConsumer(
            self.bus.js, events.JOBS_STREAM_NAME, self.worker_id, [subjects.train_subject(self.worker_id)],
            self._on_job, concurrency=self.slots)
        await self.consumer.start()
        self._tasks.append(asyncio.create_task(self._heartbeat()))

    async def _heartbeat(self) -> None:
        while True:
            beat = events_pb2.TrainerHeartbeat(
                meta=subjects.new_meta("trainer"), ping_subject=subjects.ping_subject(self.worker_id),
                worker=scheduler_pb2.Worker(id=self.worker_id, slots=self.slots, memory_mb=1e6, speed=1.0, device_kind="cpu"))
            await self.bus.notify(subjects.SUBJECT_HEARTBEAT, beat)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _on_job(self, msg, ctx) -> None:
        job = events_pb2.TrainJobEvent.FromString(msg.data).job
        started = trainer_pb2.TrialProgress(study_id=job.study_id, trial_id=job.trial_id, trainer_id=self.worker_id)
        await self.bus.publish(subjects.SUBJECT_PROGRESS, events_pb2.TrialProgressEvent(
            meta=subjects.new_meta("trainer", job.study_id, job.trial_id), progress=started), ctx=ctx)
        score = self._random.random()
        trained = trainer_pb2.TrialTrained(study_id=job.study_id, trial_id=job.trial_id, trainer_id=self.worker_id,
                                           task=job.task, train_loss=1 - score, steps=1, precision="fp32",
                                           metrics={"accuracy": score}, objective_value=score)
        await self.bus.publish(subjects.SUBJECT_TRAINED, events_pb2.TrialTrainedEvent(
            meta=subjects.new_meta("trainer", job.study_id, job.trial_id, f"trained-{job.trial_id}"), trained=trained),
            ctx=ctx)
        self.reported += 1
        for count, future in self.on_report:
            if self.reported >= count and not future.done():
                future.set_result(time.monotonic())

    def when_reported(self, count: int) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.on_report.append((count, future))
        return future

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.consumer.stop()
        await self.bus.close()


async def per_event_cpu(stack: EmbeddedStack, trainer: InstantTrainer, trials: int) -> tuple[dict[str, float], str]:
    """Gateway CPU ms per trial event at trial 10 and at trial `trials`; and the study's id."""
    gateway_pid = stack.processes["gateway"].pid
    # Count from what has been reported so far (the stack may have run other studies).
    base = trainer.reported
    marks = [10, 10 + WINDOW, trials - WINDOW, trials]
    futures = {mark: trainer.when_reported(base + mark) for mark in marks}
    cpu: dict[int, float] = {}

    async def sample(mark: int) -> None:
        await futures[mark]
        cpu[mark] = cpu_seconds(gateway_pid)

    samplers = [asyncio.create_task(sample(mark)) for mark in marks]
    async with stack.gateway_channel() as channel:
        stub = studies_pb2_grpc.StudiesStub(channel)
        study = (await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=study_spec(trials + 20, "load-big")),
                                        timeout=60)).study
        await asyncio.wait_for(asyncio.gather(*samplers), timeout=60 + trials * 2.0)
        async for update in stub.WatchStudy(studies_pb2.WatchStudyRequest(study_id=study.id, changes_only=True),
                                            timeout=300):
            final_state = update.study.state
        if final_state != common_pb2.STUDY_STATE_COMPLETED:
            raise SystemExit(f"the load study ended {common_pb2.StudyState.Name(final_state)}")
    per_event = {
        "10": 1000 * (cpu[10 + WINDOW] - cpu[10]) / WINDOW,
        str(trials): 1000 * (cpu[trials] - cpu[trials - WINDOW]) / WINDOW,
    }
    return per_event, study.id


async def client_load(stack: EmbeddedStack, clients: int, seconds: float, big_study: str,
                      rate: float | None = None) -> dict:
    """`clients` concurrent clients calling the API for `seconds`; latencies per method.

    With `rate` (requests/s over all clients), each client sends on its own Poisson schedule and
    a call's latency runs from when it was due, not from when it was sent, so a slow answer
    cannot hide the queue behind it (no coordinated omission). Without it, each client calls
    again as soon as its answer comes (a closed loop: the saturation throughput)."""
    latencies: dict[str, list[float]] = {name: [] for name, _ in CLIENT_MIX}
    errors: dict[str, int] = {}
    channels = [stack.gateway_channel() for _ in range(CHANNELS)]
    studies = [big_study]
    names, weights = zip(*CLIENT_MIX)
    deadline = time.monotonic() + seconds
    followers: set[asyncio.Task] = set()

    async def follow(call) -> None:
        """A watcher stays for up to 2 s after its first message (the gateway keeps it fed)."""
        follow_until = time.monotonic() + 2.0
        try:
            while time.monotonic() < follow_until:
                reply = await asyncio.wait_for(call.read(), timeout=max(0.01, follow_until - time.monotonic()))
                if reply is grpc.aio.EOF:
                    break
        except (asyncio.TimeoutError, grpc.aio.AioRpcError):
            pass
        finally:
            call.cancel()

    async def one_call(stub, method: str, rng: random.Random, due: float) -> None:
        if method == "GetStudy":
            study_id = rng.choice(studies)
            paged = 100 if study_id == big_study else 0
            await stub.GetStudy(studies_pb2.GetStudyRequest(study_id=study_id, trial_page_size=paged), timeout=CALL_TIMEOUT)
        elif method == "ListStudies":
            await stub.ListStudies(studies_pb2.ListStudiesRequest(page_size=50), timeout=CALL_TIMEOUT)
        elif method == "CreateStudy":
            reply = await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=study_spec(2, "load-small")),
                                           timeout=CALL_TIMEOUT)
            studies.append(reply.study.id)
        else:  # timed to its first message
            call = stub.WatchStudy(studies_pb2.WatchStudyRequest(study_id=rng.choice(studies), changes_only=True),
                                   timeout=CALL_TIMEOUT)
            try:
                await call.read()
            except BaseException:
                call.cancel()
                raise
            task = asyncio.create_task(follow(call))
            followers.add(task)
            task.add_done_callback(followers.discard)
        latencies[method].append(time.perf_counter() - due)

    async def client(index: int) -> None:
        rng = random.Random(index)
        stub = studies_pb2_grpc.StudiesStub(channels[index % CHANNELS])
        due = time.perf_counter() + (rng.expovariate(rate / clients) if rate else 0.0)
        while time.monotonic() < deadline:
            if rate:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            else:
                due = time.perf_counter()
            method = rng.choices(names, weights)[0]
            try:
                await one_call(stub, method, rng, due)
            except grpc.aio.AioRpcError as err:
                key = f"{method}: {err.code().name}"
                errors[key] = errors.get(key, 0) + 1
            if rate:
                due += rng.expovariate(rate / clients)

    began = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.monotonic() - began
    for task in list(followers):
        task.cancel()
    await asyncio.gather(*followers, return_exceptions=True)
    for channel in channels:
        await channel.close()
    done = sum(len(v) for v in latencies.values())
    return {
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "requests_per_s": done / elapsed,
        "methods": {name: {"calls": len(values),
                           "p50_ms": 1000 * statistics.median(values) if values else None,
                           "p99_ms": 1000 * _percentile(values, 0.99) if values else None}
                    for name, values in latencies.items()},
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="openautoglm-load-") as tmp:
        stack = EmbeddedStack(Path(tmp) / "stack", trainers=0)
        await stack.start()
        trainer = InstantTrainer(stack)
        try:
            await trainer.start()
            started = time.monotonic()
            per_event, big = await per_event_cpu(stack, trainer, args.trials)
            study_seconds = time.monotonic() - started
            print(f"{args.trials + 20}-trial study in {study_seconds:.1f}s; gateway CPU per trial event: "
                  + ", ".join(f"trial {k}: {v:.1f} ms" for k, v in per_event.items()), flush=True)
            rate = args.clients * args.per_client_rate
            load = await client_load(stack, args.clients, args.seconds, big, rate)
            print(f"paced: {load['requests_per_s']:.1f} requests/s of {rate:.0f} offered, {load['errors']} errors", flush=True)
            saturation = await client_load(stack, args.clients, args.saturation_seconds, big)
            print(f"saturated: {saturation['requests_per_s']:.1f} requests/s, {saturation['errors']} errors", flush=True)
            rss = peak_rss_mb(stack.processes["gateway"].pid)
        finally:
            await trainer.stop()
            stack.stop()
    first, last = per_event.values()

    def rounded(methods: dict) -> dict:
        return {k: {m: (round(x, 1) if x is not None else None) for m, x in v.items()} for k, v in methods.items()}

    return {"errors": load["errors"] + saturation["errors"], "requests_per_s": round(load["requests_per_s"], 1),
            "offered_requests_per_s": round(rate, 1), "methods": rounded(load["methods"]),
            "saturation": {"requests_per_s": round(saturation["requests_per_s"], 1), "errors": saturation["errors"],
                           "seconds": args.saturation_seconds, "methods": rounded(saturation["methods"])},
            "gateway_peak_rss_mb": round(rss, 1),
            "cpu_ms_per_event": {k: round(v, 2) for k, v in per_event.items()},
            "cpu_ratio_last_to_first": round(last / first, 2) if first else None,
            "error_kinds": {**load["error_kinds"], **{f"saturated {k}": v for k, v in saturation["error_kinds"].items()}},
            "clients": args.clients, "seconds": args.seconds,
            "study_trials": args.trials + 20, "study_seconds": round(study_seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 clients for 10 s (the 1,000-trial study still runs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--clients", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="the paced phase (60; 10 with --quick)")
    parser.add_argument("--per-client-rate", type=float, default=1.25,
                        help="requests/s each client sends in the paced phase (Poisson)")
    parser.add_argument("--saturation-seconds", type=float, default=None,
                        help="the closed-loop phase that finds the saturation throughput (20; 5 with --quick)")
    parser.add_argument("--trials", type=int, default=1000, help="the trial whose event cost is compared with trial 10's")
    args = parser.parse_args()
    args.clients = args.clients or (50 if args.quick else 200)
    args.seconds = args.seconds or (10.0 if args.quick else 60.0)
    args.saturation_seconds = args.saturation_seconds or (5.0 if args.quick else 20.0)
    if args.trials < 10 + 2 * WINDOW:
        parser.error(f"--trials must be at least {10 + 2 * WINDOW}")
    result = asyncio.run(run(args))
    for phase, methods in (("paced", result["methods"]), ("saturated", result["saturation"]["methods"])):
        for name, figures in methods.items():
            print(f"{phase:9s} {name:12s} {figures['calls']:6d} calls  p50 {figures['p50_ms']} ms  p99 {figures['p99_ms']} ms")
    print(f"{result['requests_per_s']} requests/s paced ({result['saturation']['requests_per_s']} saturated), "
          f"{result['errors']} errors, gateway peak RSS "
          f"{result['gateway_peak_rss_mb']} MiB, CPU per trial event {result['cpu_ms_per_event']}")
    if args.json:
        print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
