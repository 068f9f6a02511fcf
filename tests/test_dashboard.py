"""The dashboard's server side and the API it reads, over plain HTTP against the embedded stack:
its pages and their security headers, the spec check, parameter importance, the trainers, the
studies list's progress and best, and the chart library vendored from npm. The browser itself is
driven in test_dashboard_browser.py."""
from __future__ import annotations

import json
import random
from pathlib import Path

import aiohttp
import pytest
from google.protobuf import json_format

from openautoglm.common.spec.protos import param_to_proto, spec_to_proto
from openautoglm.common.spec.schema import validate_dict
from openautoglm.gateway import dashboard
from openautoglm.gateway.importance import parameter_importance
from openautoglm.v1 import common_pb2, keys_pb2
from helpers import create_key, small_spec

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parent.parent


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_the_vendored_chart_library_is_the_npm_package_pinned_in_package_json():
    """scripts/vendor_dashboard.py copied these from node_modules (installed by `make setup`)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vendor_dashboard", ROOT / "scripts" / "vendor_dashboard.py")
    assert spec is not None and spec.loader is not None
    vendor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vendor)
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["echarts"]
    installed = json.loads((ROOT / "node_modules" / "echarts" / "package.json").read_text())["version"]
    assert installed == pinned
    for source, name in vendor.FILES:
        shipped = dashboard.STATIC_DIR / "vendor" / name
        assert shipped.read_bytes() == (ROOT / "node_modules" / source).read_bytes(), f"{name} drifted: run make vendor"
    assert "Apache License" in (dashboard.STATIC_DIR / "vendor" / "LICENSE.echarts").read_text()


def _study(values: list[tuple[float, int, float]], maximize: bool = True) -> common_pb2.Study:
    """A study whose trials set learning_rate and epochs; values: (lr, epochs, objective)."""
    spec = validate_dict(small_spec(strategy="tpe", search_space={
        "templates": [{"id": "plain", "text": "Review: {input} Sentiment:"}],
        "hyperparameters": {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
                            "epochs": {"type": "choice", "values": [1, 2, 3]}}},
        objective={"terms": {"accuracy": 1.0}, "direction": "maximize" if maximize else "minimize"}))
    study = common_pb2.Study(id="st-1", spec=spec_to_proto(spec))
    for number, (lr, epochs, objective) in enumerate(values):
        trial = study.trials.add(id=f"t-{number}", number=number, status=common_pb2.TRIAL_STATUS_SUCCEEDED,
                                 objective_value=objective)
        trial.candidate.prompt = "Review: {input} Sentiment:"
        trial.candidate.hyperparameters["learning_rate"].CopyFrom(param_to_proto(lr))
        trial.candidate.hyperparameters["epochs"].CopyFrom(param_to_proto(epochs))
    return study


def test_importance_ranks_the_parameter_the_objective_follows_first():
    rng = random.Random(0)
    rows = []
    for _ in range(40):
        lr = 10 ** rng.uniform(-4, -1)
        epochs = rng.randint(1, 3)
        rows.append((lr, epochs, 0.2 * epochs + 0.001 * rng.gauss(0, 1)))  # epochs alone matters
    found = parameter_importance(_study(rows))
    names = [name for name, _ in found.values]
    assert found.trials == 40 and names[0] == "epochs", found.values
    assert dict(found.values)["epochs"] > 0.8 and abs(sum(v for _, v in found.values) - 1.0) < 1e-6
    # A failed trial and a value outside the spec's space are not weighed.
    study = _study(rows[:5])
    study.trials[0].status = common_pb2.TRIAL_STATUS_FAILED
    study.trials[1].candidate.hyperparameters["epochs"].CopyFrom(param_to_proto(9))
    assert parameter_importance(study).trials == 4
    assert parameter_importance(_study(rows[:1])).values == []  # one trial: nothing to compare
    with pytest.raises(ValueError, match="objective_index"):
        parameter_importance(_study(rows), objective_index=1)


async def test_the_dashboard_pages_are_static_files_with_a_strict_policy(stack):
    async with aiohttp.ClientSession(stack.http_url()) as http:
        async with http.get("/", allow_redirects=False) as root:
            assert root.status == 302 and root.headers["Location"] == "/dashboard/"
        async with http.get("/dashboard/") as page:
            text = await page.text()
            assert page.status == 200 and "static/app.js" in text and "<html lang=\"en\">" in text
            policy = page.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "connect-src 'self'" in policy
            assert page.headers["X-Content-Type-Options"] == "nosniff" and page.headers["Referrer-Policy"] == "no-referrer"
        async with http.get("/dashboard/static/vendor/echarts.min.js") as library:
            assert library.status == 200 and len(await library.read()) > 500_000
        for escape in ("/dashboard/static/../__init__.py", "/dashboard/static/%2e%2e/__init__.py",
                       "/dashboard/static/..%2f..%2fhttp_api.py"):
            async with http.get(escape) as outside:
                assert outside.status in (403, 404), escape
                assert "add_dashboard" not in await outside.text()
        async with http.get("/dashboard/config.json") as config:
            body = await config.json()
            assert body["jaegerUrl"] == "http://localhost:16686" and "name: sentiment-demo" in body["exampleSpec"]


async def test_the_spec_check_turns_yaml_into_the_contracts_json_or_names_the_line(stack):
    member = await create_key(stack, "dash-team", keys_pb2.ROLE_MEMBER)
    reader = await create_key(stack, "dash-team", keys_pb2.ROLE_READER)
    good = (ROOT / "services" / "openautoglm" / "common" / "examples" / "demo.yaml").read_text()
    async with aiohttp.ClientSession(stack.http_url()) as http:
        for headers in ({}, _auth(reader), _auth("not-a-key")):
            async with http.post("/dashboard/spec", data=good, headers=headers) as refused:
                assert refused.status == 401 and (await refused.json())["error"]["status"] == "UNAUTHENTICATED"
        async with http.post("/dashboard/spec", data=good, headers=_auth(member)) as checked:
            body = await checked.json()
            assert checked.status == 200, body
        assert body["spec"]["name"] == "sentiment-demo" and body["lines"]["budget.max_trials"] == 30
        # What it returns is what CreateStudy takes, through the same API.
        async with http.post("/v1/studies", json={"spec": body["spec"], "requestId": "dash-spec-1"},
                             headers=_auth(member)) as created:
            assert created.status == 200, await created.text()
            study_id = (await created.json())["study"]["id"]
        async with http.post(f"/v1/studies/{study_id}:cancel", json={}, headers=_auth(member)) as cancelled:
            assert cancelled.status == 200
        bad = good.replace("max_trials: 8", "max_trials: 0")
        async with http.post("/dashboard/spec", data=bad, headers=_auth(member)) as rejected:
            error = (await rejected.json())["error"]
            assert rejected.status == 400 and error["field"] == "budget.max_trials" and error["line"] == 30
            assert "greater than 0" in error["message"]
        # A path outside the server's roots is refused without being read; aliases are refused.
        outside = good.replace("builtin: sentiment-demo", "path: /etc/passwd\n  text_field: text\n  label_field: label")
        async with http.post("/dashboard/spec", data=outside, headers=_auth(member)) as refused:
            error = (await refused.json())["error"]
            assert refused.status == 400 and error["field"].startswith("dataset") and "not readable here" in error["message"]
            assert "root:" not in json.dumps(error)  # nothing of the file comes back
        bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"
        async with http.post("/dashboard/spec", data=bomb, headers=_auth(member)) as refused:
            error = (await refused.json())["error"]
            assert refused.status == 400 and error["line"] == 2 and "aliases" in error["message"]
        async with http.post("/dashboard/spec", data=b"x" * (dashboard.MAX_SPEC_BYTES + 1), headers=_auth(member)) as big:
            assert big.status == 413


async def test_importance_trainers_and_the_studies_list_over_http(stack):
    """GetParameterImportance and ListTrainers through the JSON API, with their keys and tenants,
    and ListStudies' progress and best (what the dashboard's lists show)."""
    from helpers import run_study_over_http

    reader = await create_key(stack, "default", keys_pb2.ROLE_READER)
    stranger = await create_key(stack, "dash-other", keys_pb2.ROLE_ADMIN)
    spec = small_spec(name="importance-study")
    spec_json = json_format.MessageToDict(spec_to_proto(validate_dict(spec)))
    study = await run_study_over_http(stack.http_url(), stack.api_key, spec_json)
    async with aiohttp.ClientSession(stack.http_url()) as http:
        async with http.get(f"/v1/studies/{study['id']}:importance", headers=_auth(reader)) as got:
            body = await got.json()
            assert got.status == 200, body
        assert body["trials"] == 4 and body["evaluator"] == "FanovaImportanceEvaluator"
        names = {row["name"] for row in body["importances"]}
        assert "epochs" in names and abs(sum(row.get("importance", 0.0) for row in body["importances"]) - 1.0) < 1e-6
        async with http.get(f"/v1/studies/{study['id']}:importance", headers=_auth(stranger)) as hidden:
            assert hidden.status == 404
        async with http.get(f"/v1/studies/{study['id']}:importance", params={"objectiveIndex": "3"},
                            headers=_auth(reader)) as bad:
            assert bad.status == 400 and "objective_index" in (await bad.json())["error"]["message"]
        async with http.get("/v1/trainers") as anonymous:
            assert anonymous.status == 401
        async with http.get("/v1/trainers", headers=_auth(reader)) as trainers:
            listed = (await trainers.json())["trainers"]
        assert [t["id"] for t in listed] == ["trainer-0"]
        assert listed[0]["slots"] >= 1 and listed[0]["memoryMb"] > 0 and 0.0 <= listed[0].get("utilisation", 0.0) <= 1.0
        assert "address" not in json.dumps(listed)  # the mesh's addresses stay inside it
        async with http.get("/v1/studies", params={"pageSize": "100"}, headers=_auth(reader)) as page:
            row = next(s for s in (await page.json())["studies"] if s["id"] == study["id"])
        assert row["trialCount"] == 4 and row["finishedTrialCount"] == 4 and "trials" not in row
        best = next(t for t in study["trials"] if t["id"] == study["bestTrialId"])
        assert row["bestObjectiveValue"] == pytest.approx(best["objectiveValue"])
