"""Small builders shared by the tests (specs, gateway calls)."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from openautoglm.common.spec.protos import spec_to_proto
from openautoglm.common.spec.schema import validate_dict
from openautoglm.v1 import (
    artifacts_pb2,
    cluster_pb2,
    common_pb2,
    evaluator_pb2,
    keys_pb2,
    keys_pb2_grpc,
    models_pb2,
    prompt_generator_pb2,
    scheduler_pb2,
    studies_pb2,
    studies_pb2_grpc,
    trainer_pb2,
)

TERMINAL = (common_pb2.STUDY_STATE_COMPLETED, common_pb2.STUDY_STATE_FAILED, common_pb2.STUDY_STATE_CANCELLED)


def small_spec(**overrides) -> dict:
    """A quick classification study: 2 templates x 2 epoch values, grid, 4 trials."""
    spec = {
        "name": "test-study",
        "task": "classification",
        "dataset": {"builtin": "sentiment-demo", "max_examples": 200},
        "search_space": {
            "templates": [
                {"id": "plain", "text": "Review: {input} Sentiment:"},
                {"id": "asked", "text": "{question} {input}"},
            ],
            "variables": {"question": ["How does this feel?"]},
            "hyperparameters": {"epochs": {"type": "choice", "values": [1, 2]},
                                "learning_rate": {"type": "choice", "values": [0.003]}},
        },
        "objective": {"terms": {"accuracy": 0.5, "macro_f1": 0.5}},
        "strategy": "grid",
        "budget": {"max_trials": 4},
        "seed": 3,
    }
    for key, value in overrides.items():
        spec[key] = value
    return spec


def chaos_spec(trials: int = 12, seed: int = 11, epochs: int = 1) -> common_pb2.StudySpec:
    """Short trials, `epochs` each (one epoch is about 0.1 s on CPU): a random search over two
    templates and a continuous learning rate (the studies the chaos tests kill processes under)."""
    spec = small_spec(strategy="random", budget={"max_trials": trials}, seed=seed)
    spec["search_space"]["hyperparameters"] = {
        "epochs": {"type": "choice", "values": [epochs]},
        "learning_rate": {"type": "loguniform", "low": 0.001, "high": 0.01},
    }
    return spec_to_proto(validate_dict(spec))


def spec_proto(**overrides) -> common_pb2.StudySpec:
    return spec_to_proto(validate_dict(small_spec(**overrides)))


async def get_study(stack, study_id: str, process: str | None = None) -> common_pb2.Study | None:
    """The study now (from one gateway `process`, else any replica), or None while the gateway
    cannot answer."""
    try:
        async with stack.gateway_channel(process=process) as channel:
            reply = await studies_pb2_grpc.StudiesStub(channel).GetStudy(
                studies_pb2.GetStudyRequest(study_id=study_id), timeout=5, wait_for_ready=True)
            return reply.study
    except grpc.aio.AioRpcError:
        return None


async def poll_study(stack, study_id: str, done, timeout: float, process: str | None = None) -> common_pb2.Study:
    """Read the study until `done(study)`; AssertionError with the last one seen after `timeout` s."""
    deadline = time.monotonic() + timeout
    study = None
    while time.monotonic() < deadline:
        study = await get_study(stack, study_id, process) or study
        if study is not None and done(study):
            return study
        await asyncio.sleep(0.2)
    raise AssertionError(f"condition not met within {timeout}s; last seen: {study}")


def succeeded(study: common_pb2.Study) -> int:
    return sum(t.status == common_pb2.TRIAL_STATUS_SUCCEEDED for t in study.trials)


# Prometheus samples keyed by (name, sorted labels).
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of a Prometheus endpoint (plain HTTP on loopback)."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


async def run_study(stack, spec: common_pb2.StudySpec, timeout: float = 240) -> common_pb2.Study:
    """Create a study on `stack`'s gateway (with its admin key) and follow WatchStudy until it
    ends; returns the final study."""
    async with stack.gateway_channel() as channel:
        stub = studies_pb2_grpc.StudiesStub(channel)
        created = (await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec), timeout=30)).study
        study = created
        async for update in stub.WatchStudy(studies_pb2.WatchStudyRequest(study_id=created.id), timeout=timeout):
            study = update.study
        return study


# Which process of the embedded stack serves each service of the contract (the protos).
SERVICES_BY_PROCESS = {
    "gateway": (studies_pb2.DESCRIPTOR.services_by_name["Studies"], keys_pb2.DESCRIPTOR.services_by_name["Keys"],
                artifacts_pb2.DESCRIPTOR.services_by_name["Artifacts"], models_pb2.DESCRIPTOR.services_by_name["Models"],
                cluster_pb2.DESCRIPTOR.services_by_name["Cluster"]),
    "prompt-generator": (prompt_generator_pb2.DESCRIPTOR.services_by_name["PromptGenerator"],),
    "gnn-scheduler": (scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"],),
    "trainer": (trainer_pb2.DESCRIPTOR.services_by_name["Trainer"], trainer_pb2.DESCRIPTOR.services_by_name["ModelServer"],
                trainer_pb2.DESCRIPTOR.services_by_name["PromptModel"]),
    "evaluator": (evaluator_pb2.DESCRIPTOR.services_by_name["Evaluator"],),
}


def process_channel(stack, process: str) -> grpc.aio.Channel:
    """A channel to one process of the stack: the gateway with the admin key (so a request gets
    past the door and is what gets judged), the internal services as they are."""
    return stack.gateway_channel() if process == "gateway" else stack.service_channel(process)


async def serving_statuses(stack) -> set[str]:
    """The standard health status of every service process of the stack."""
    statuses = set()
    for process in SERVICES_BY_PROCESS:
        async with (stack.service_channel(process) if process != "gateway" else stack.gateway_channel()) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            statuses.add(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    return statuses


async def sse_messages(response):
    """(event, data) pairs of a Server-Sent Events body (an aiohttp response), as a browser's
    EventSource parses it."""
    event, data = "message", []
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line.startswith("event: "):
            event = line[7:]


async def run_study_over_http(base_url: str, key: str, spec_json: dict, timeout: float = 240) -> dict:
    """Create a study with the JSON API, follow its SSE watch to the end; the study as GetStudy
    returns it (protobuf JSON)."""
    import aiohttp

    async with aiohttp.ClientSession(base_url, headers={"Authorization": f"Bearer {key}"},
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        async with http.post("/v1/studies", json={"spec": spec_json}) as created:
            assert created.status == 200, await created.text()
            study_id = (await created.json())["study"]["id"]
        async with http.get(f"/v1/studies/{study_id}:watch", params={"changesOnly": "true"}) as watch:
            async for _event, _message in sse_messages(watch):
                pass
        async with http.get(f"/v1/studies/{study_id}") as got:
            return (await got.json())["study"]


async def dashboard_sign_in(page, base_url: str, key: str) -> None:
    """Sign in to the dashboard in a playwright page, by keyboard: type the key, press Enter."""
    await page.goto(base_url + "/dashboard/")
    await page.get_by_label("API key").fill(key)
    await page.get_by_label("API key").press("Enter")
    await page.locator("main h1", has_text="Studies").wait_for()


async def create_key(stack, tenant: str, role: int = keys_pb2.ROLE_MEMBER) -> str:
    """A new API key's secret for `tenant` (made with the stack's admin key)."""
    async with stack.gateway_channel() as channel:
        reply = await keys_pb2_grpc.KeysStub(channel).CreateKey(
            keys_pb2.CreateKeyRequest(tenant=tenant, role=role, name=f"test {tenant}"), timeout=10)
    return reply.secret


# The corpus the suite's own instruction-writing model learns: instruction-like sentences, so
# what it writes reads like an instruction (the path under test is the real one: a Hugging Face
# causal LM directory loaded by the prompt-generator, sampled with a seed).
INSTRUCTION_CORPUS = [
    "Classify the sentiment of this review.", "Decide whether the review is positive, negative or neutral.",
    "Read the review and name its sentiment.", "Say how the writer feels about the product.",
    "Label the review as positive, negative or neutral.", "Tell whether this review is happy or unhappy.",
    "Judge the tone of the review in one word.", "Answer with the sentiment of the text.",
    "Translate the sentence into pig latin.", "Move the first consonants of each word to the end and add ay.",
    "Rewrite each word in pig latin.", "Turn the sentence into pig latin word by word.",
    "Give the sentiment of the review in one word.", "Read carefully and answer with one label.",
    "Decide how the customer feels.", "Name the feeling of the writer.",
]


def build_instruction_model(directory) -> str:
    """A tiny GLM-style causal LM trained for a few seconds on INSTRUCTION_CORPUS, saved as a
    Hugging Face directory (config, weights, tokenizer): the suite's stand-in for a real
    checkpoint such as a Qwen or GLM instruct model."""
    from pathlib import Path

    import torch
    from transformers import GlmForCausalLM

    from openautoglm.prompt_generator import writer
    from openautoglm.trainer.models import build_word_tokenizer, tiny_glm_config

    directory = Path(directory)
    if (directory / "config.json").is_file():
        return str(directory)
    meta = " ".join([writer.APE_TEMPLATE, writer.OPRO_TEMPLATE, writer.PARAPHRASE_TEMPLATE])
    tokenizer = build_word_tokenizer(INSTRUCTION_CORPUS + [meta])
    torch.manual_seed(0)
    model = GlmForCausalLM(tiny_glm_config(len(tokenizer), tokenizer, 64))
    rows = [tokenizer(f"Instruction: {text}", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            for text in INSTRUCTION_CORPUS]
    width = max(map(len, rows))
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    labels = torch.where(ids == tokenizer.pad_token_id, -100, ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)
