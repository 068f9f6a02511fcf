"""The dashboard on a 200-trial study: how long its page takes to load, and how long a finished
trial takes to appear on it.

    python benchmarks/dashboard.py [--quick] [--json] [--trials N] [--loads K]

It starts the embedded stack (a real NATS server, the five services as processes) and headless
chromium (Debian's package, driven by playwright; OPENAUTOGLM_CHROMIUM names another), creates a
study of N trials (200; 20 with --quick) of the tiny model, and opens its page at once.

- **SSE update latency**, while the study runs: for each trial that finishes, from the gateway's
  record of it (the trial's `finished_at`) to the moment the page has drawn it (the page's User
  Timing mark `openautoglm:trial-shown`, after the table and charts are redrawn; redraws are
  at most one per 100 ms, and at least twice the last redraw's cost apart). `sse_received_ms`: to the moment the page parsed the event
  (`openautoglm:trial-received`), before drawing; `render_ms`: how long each redraw took
  (`openautoglm:render`). Baseline, in the same run and for the same trials: a gRPC WatchStudy
  client (changes_only, in Python) receiving the same change: the floor of any watcher.
- **Page load**, once the study completed: K fresh loads (5; 2 with --quick) of the study's page
  in a new tab, from navigation start to the mark `openautoglm:study-rendered` (the HTML, the
  scripts, the chart library, WatchStudy's first message with every trial, and the table and four
  charts drawn). Baseline: GetStudy of the same study over JSON/HTTP from a Python client (the
  bytes any page must fetch), K times.

The last line with --json is one JSON object: {"trials", "page_load_ms": {"median", "runs"},
"get_study_ms": {"median", "runs"}, "page_load_over_get_study", "sse_latency_ms": {"p50", "p95",
"max", "n"}, "sse_received_ms": {...}, "grpc_watch_latency_ms": {...}, "render_ms": {...},
"sse_p50_over_grpc_p50"}.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import aiohttp  # noqa: E402
from google.protobuf import json_format  # noqa: E402

from openautoglm.common.spec.protos import spec_to_proto  # noqa: E402
from openautoglm.common.spec.schema import validate_dict  # noqa: E402
from openautoglm.common.stack import EmbeddedStack  # noqa: E402
from openautoglm.v1 import studies_pb2, studies_pb2_grpc  # noqa: E402
from helpers import dashboard_sign_in  # noqa: E402


def _spec(trials: int) -> dict:
    """Short trials of the tiny model: a random search over a template and two hyper-parameters."""
    return json_format.MessageToDict(spec_to_proto(validate_dict({
        "name": f"dashboard-benchmark-{trials}", "task": "classification",
        "dataset": {"builtin": "sentiment-demo", "max_examples": 100},
        "search_space": {"templates": [{"id": "plain", "text": "Review: {input} Sentiment:"},
                                       {"id": "asked", "text": "How does this feel? {input}"}],
                         "hyperparameters": {"epochs": {"type": "choice", "values": [1]},
                                             "learning_rate": {"type": "loguniform", "low": 0.0005, "high": 0.01}}},
        "objective": {"terms": {"accuracy": 0.5, "macro_f1": 0.5}},
        "strategy": "random", "budget": {"max_trials": trials}, "seed": 13})))


def _spread(values: list[float]) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {"p50": round(statistics.median(ordered), 1), "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
            "max": round(ordered[-1], 1), "n": len(ordered)}


async def _grpc_watch(stack: EmbeddedStack, study_id: str) -> dict[str, float]:
    """Baseline: a gRPC watcher's receipt time minus each trial's finished_at, in ms."""
    latencies: dict[str, float] = {}
    async with stack.gateway_channel() as channel:
        stub = studies_pb2_grpc.StudiesStub(channel)
        async for update in stub.WatchStudy(studies_pb2.WatchStudyRequest(study_id=study_id, changes_only=True), timeout=3600):
            now_ms = time.time() * 1000
            for trial in update.changed_trials:
                if trial.HasField("finished_at") and trial.id not in latencies:
                    latencies[trial.id] = now_ms - trial.finished_at.ToMilliseconds()
    return latencies


async def run(trials: int, loads: int) -> dict:
    from playwright.async_api import async_playwright

    executable = os.environ.get("OPENAUTOGLM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise SystemExit("no chromium: apt-get install chromium (or set OPENAUTOGLM_CHROMIUM)")
    stack = EmbeddedStack(Path(tempfile.mkdtemp(prefix="openautoglm-dashboard-bench-")), trainer_slots=2)
    await stack.start()
    try:
        base, key = stack.http_url(), stack.api_key
        headers = {"Authorization": f"Bearer {key}"}
        async with async_playwright() as playwright, aiohttp.ClientSession(base, headers=headers) as http:
            browser = await playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
            page = await (await browser.new_context(viewport={"width": 1280, "height": 800})).new_page()
            await dashboard_sign_in(page, base, key)
            async with http.post("/v1/studies", json={"spec": _spec(trials)}) as created:
                study_id = (await created.json())["study"]["id"]
            watcher = asyncio.create_task(_grpc_watch(stack, study_id))
            await page.goto(f"{base}/dashboard/#/studies/{study_id}")
            grpc_latency = await watcher  # returns when the study has completed
            await page.get_by_text("finished: no more updates").wait_for(timeout=120_000)
            shown, received = await page.evaluate("""() => ['openautoglm:trial-shown', 'openautoglm:trial-received']
                .map(name => performance.getEntriesByName(name).map(m => [m.detail.id, performance.timeOrigin + m.startTime]))""")
            renders = await page.evaluate("() => performance.getEntriesByName('openautoglm:render').map(m => m.duration)")
            for name in ("x:table", "x:charts"):
                print(name, _spread(await page.evaluate(f"() => performance.getEntriesByName('{name}').map(m => m.duration)")))
            async with http.get(f"/v1/studies/{study_id}") as got:
                study = (await got.json())["study"]
            finished_ms = {t["id"]: _epoch_ms(t["finishedAt"]) for t in study["trials"] if "finishedAt" in t}
            sse_latency = _first_after(shown, finished_ms)
            sse_received = _first_after(received, finished_ms)
            common = sorted(set(sse_latency) & set(grpc_latency) & set(sse_received))

            page_loads = []
            for _ in range(loads):
                tab = await (await browser.new_context(viewport={"width": 1280, "height": 800})).new_page()
                await dashboard_sign_in(tab, base, key)
                await tab.goto("about:blank")
                await tab.goto(f"{base}/dashboard/#/studies/{study_id}")
                await tab.locator(f"#chart-objective[data-points='{len(study['trials'])}']").wait_for(timeout=60_000)
                mark = await tab.evaluate("""() => { const m = performance.getEntriesByName('openautoglm:study-rendered')[0];
                    return [m.startTime, m.detail.trials]; }""")
                assert mark[1] == len(study["trials"]), mark
                page_loads.append(mark[0])
                await tab.context.close()
            get_study = []
            for _ in range(loads):
                started = time.perf_counter()
                async with http.get(f"/v1/studies/{study_id}") as got:
                    assert len((await got.json())["study"]["trials"]) == len(study["trials"])
                get_study.append((time.perf_counter() - started) * 1000)
            await browser.close()
    finally:
        stack.stop()
    sse = _spread([sse_latency[i] for i in common])
    grpc_spread = _spread([grpc_latency[i] for i in common])
    return {
        "trials": len(study["trials"]), "state": study["state"],
        "page_load_ms": {"median": round(statistics.median(page_loads), 1), "runs": [round(v, 1) for v in page_loads]},
        "get_study_ms": {"median": round(statistics.median(get_study), 1), "runs": [round(v, 1) for v in get_study]},
        "page_load_over_get_study": round(statistics.median(page_loads) / statistics.median(get_study), 2),
        "sse_latency_ms": sse, "sse_received_ms": _spread([sse_received[i] for i in common]),
        "grpc_watch_latency_ms": grpc_spread, "render_ms": _spread(renders),
        "sse_p50_over_grpc_p50": round(sse["p50"] / grpc_spread["p50"], 2) if common and grpc_spread["p50"] > 0 else None,
    }


def _first_after(marks: list[list], finished_ms: dict[str, float]) -> dict[str, float]:
    """Each trial's first mark, in ms after the trial finished."""
    latency: dict[str, float] = {}
    for trial_id, at in marks:
        if trial_id in finished_ms and trial_id not in latency:
            latency[trial_id] = at - finished_ms[trial_id]
    return latency


def _epoch_ms(rfc3339: str) -> float:
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp()
    stamp.FromJsonString(rfc3339)
    return stamp.ToNanoseconds() / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 trials, 2 page loads")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--loads", type=int, default=None)
    args = parser.parse_args()
    trials = args.trials or (20 if args.quick else 200)
    loads = args.loads or (2 if args.quick else 5)
    started = time.monotonic()
    report = asyncio.run(run(trials, loads))
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    print(f"{report['trials']} trials ({report['state']}), {report['wall_seconds']} s")
    print(f"page load: median {report['page_load_ms']['median']} ms over {loads} loads "
          f"(GetStudy over HTTP: {report['get_study_ms']['median']} ms; ratio {report['page_load_over_get_study']}x)")
    sse, grpc_ = report["sse_latency_ms"], report["grpc_watch_latency_ms"]
    print(f"SSE update latency (finished -> drawn): p50 {sse.get('p50')} ms, p95 {sse.get('p95')} ms, max {sse.get('max')} ms "
          f"over {sse['n']} trials; gRPC WatchStudy p50 {grpc_.get('p50')} ms, p95 {grpc_.get('p95')} ms "
          f"(ratio of p50s {report['sse_p50_over_grpc_p50']}x); the page received them at p50 "
          f"{report['sse_received_ms'].get('p50')} ms; each redraw took p50 {report['render_ms'].get('p50')} ms, "
          f"p95 {report['render_ms'].get('p95')} ms over {report['render_ms']['n']} redraws")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
