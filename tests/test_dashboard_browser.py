"""The dashboard in a real browser: Debian's chromium, headless, driven by playwright against the
embedded stack's gateway. A real study runs while its page is open; the page must show every
trial, the best candidate and a chart with one point per trial. A bad spec shows the field's
message at its line; a read-only key cannot cancel. Screenshots of each page are written to
$OPENAUTOGLM_TEST_ARTIFACTS (default: test-artifacts/ in the repository).

Playwright's own browser download does not work here, so the browser is the system's chromium
(OPENAUTOGLM_CHROMIUM names another). Without one these tests skip, unless
OPENAUTOGLM_REQUIRE_BROWSER is set (as .ci/run sets it): then they fail.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import aiohttp
import pytest
from google.protobuf import json_format

from openautoglm.common.spec.protos import spec_to_proto
from openautoglm.common.spec.schema import validate_dict
from openautoglm.v1 import keys_pb2
from helpers import create_key, dashboard_sign_in, small_spec

pytestmark = pytest.mark.timeout(400)
ROOT = Path(__file__).resolve().parent.parent
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _chromium() -> str | None:
    return os.environ.get("OPENAUTOGLM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
async def browser():
    executable = _chromium()
    if executable is None:
        message = "no chromium on PATH (apt-get install chromium, or set OPENAUTOGLM_CHROMIUM)"
        if os.environ.get("OPENAUTOGLM_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        await launched.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("OPENAUTOGLM_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def _page(browser, viewport=DESKTOP):
    """A fresh tab (its own sessionStorage) that fails the test on any script error."""
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" and "status of 4" not in message.text else None)
    page.script_errors = errors
    return page


def _spec_json(**overrides) -> dict:
    return json_format.MessageToDict(spec_to_proto(validate_dict(small_spec(**overrides))))


async def _create(base: str, key: str, spec_json: dict) -> dict:
    async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {key}"}) as http:
        async with http.post("/v1/studies", json={"spec": spec_json}) as created:
            assert created.status == 200, await created.text()
            return (await created.json())["study"]


async def _get(base: str, key: str, study_id: str) -> dict:
    async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {key}"}) as http:
        async with http.get(f"/v1/studies/{study_id}") as got:
            return (await got.json())["study"]


async def _cancel(base: str, key: str, study_id: str) -> None:
    async with aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {key}"}) as http:
        async with http.post(f"/v1/studies/{study_id}:cancel", json={}) as cancelled:
            assert cancelled.status == 200, await cancelled.text()


def _searched_spec(name: str, trials: int) -> dict:
    spec = _spec_json(name=name, strategy="random", budget={"max_trials": trials}, seed=5)
    spec["searchSpace"]["hyperparameters"] = [
        {"name": "epochs", "choice": {"values": [{"integer": "1"}, {"integer": "2"}]}},
        {"name": "learning_rate", "logUniform": {"low": 0.0005, "high": 0.01}},
    ]
    return spec


async def test_a_live_study_page_shows_every_trial_the_best_candidate_and_one_point_per_trial(stack, browser, artifacts):
    base, key = stack.http_url(), stack.api_key
    page = await _page(browser)
    await dashboard_sign_in(page, base, key)
    await page.screenshot(path=artifacts / "studies-empty-or-earlier.png")
    study = await _create(base, key, _searched_spec("browser-study", 6))
    await page.goto(f"{base}/dashboard/#/studies/{study['id']}")  # open while it runs: live updates
    await page.locator("#chart-objective[data-points='6']").wait_for(timeout=240_000)
    await page.get_by_text("finished: no more updates").wait_for(timeout=60_000)
    done = await _get(base, key, study["id"])
    assert done["state"] == "STUDY_STATE_COMPLETED" and len(done["trials"]) == 6

    # The last redraw can follow the stream's end: wait for it to show the final best.
    best = next(t for t in done["trials"] if t["id"] == done["bestTrialId"])
    await page.locator("#best-objective", has_text=f"{best['objectiveValue']:.4f}").wait_for()
    await page.locator(f"tr.best[data-trial='{best['id']}']").wait_for()
    # Every trial is a row, the best one marked; the best candidate's prompt and objective.
    rows = page.locator("#trials tbody tr")
    assert await rows.count() == 6
    assert {await rows.nth(i).get_attribute("data-trial") for i in range(6)} == {t["id"] for t in done["trials"]}
    assert await page.locator("tr.best").get_attribute("data-trial") == best["id"]
    assert await page.locator("#best-prompt").inner_text() == best["candidate"]["prompt"]
    assert f"{best['objectiveValue']:.4f}" in await page.locator("#best-objective").inner_text()
    # The objective chart holds one point per trial, and its running best ends at the best.
    points = await page.evaluate(
        "() => echarts.getInstanceByDom(document.getElementById('chart-objective')).getOption().series.map(s => s.data)")
    assert sorted(p[0] for p in points[0]) == sorted(t.get("number", 0) for t in done["trials"])
    assert points[1][-1][1] == pytest.approx(best["objectiveValue"])
    parallel = await page.evaluate(
        "() => echarts.getInstanceByDom(document.getElementById('chart-parallel')).getOption().series[0].data.length")
    assert parallel == 6
    await page.locator("#chart-importance[data-points='3']").wait_for()  # prompt, epochs, learning_rate
    jaeger = await page.locator("#jaeger-link").get_attribute("href")
    assert jaeger == f"http://localhost:16686/trace/{done['traceId']}"
    # The key is in this tab's session storage only: never in the URL or the page.
    assert key not in page.url and key not in await page.content()
    assert await page.evaluate("() => sessionStorage.getItem('openautoglm.apiKey')") == key
    # Sorting by keyboard: focus the Objective header's button, press Enter.
    await page.get_by_role("button", name="Objective").focus()
    await page.keyboard.press("Enter")
    assert await page.locator("th", has=page.get_by_role("button", name="Objective")).get_attribute("aria-sort") == "descending"
    assert await rows.first.get_attribute("data-trial") == best["id"]
    # Filtering: one status, then text.
    await page.get_by_label("Status").select_option("FAILED")
    assert await rows.count() == 0
    await page.get_by_label("Status").select_option("")
    assert await rows.count() == 6
    await page.screenshot(path=artifacts / "study.png", full_page=True)

    # Every control has a label; every chart has a text alternative.
    unlabeled = await page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim()).length""")
    assert unlabeled == 0
    assert all(await page.locator(".chart[role='img']").evaluate_all("els => els.map(e => e.getAttribute('aria-label'))"))

    # The list shows its progress and best.
    await page.get_by_role("link", name="Studies", exact=True).click()
    row = page.locator("tbody tr", has=page.get_by_role("link", name="browser-study"))
    await row.get_by_text("6/6").wait_for()
    assert f"{best['objectiveValue']:.4f}" in await row.inner_text()
    await page.screenshot(path=artifacts / "studies.png", full_page=True)
    assert page.script_errors == []

    # A phone: the study page fits its width (wide tables scroll inside their own region).
    phone = await _page(browser, PHONE)
    await dashboard_sign_in(phone, base, key)
    await phone.goto(f"{base}/dashboard/#/studies/{study['id']}")
    await phone.locator("#chart-objective[data-points='6']").wait_for()
    assert await phone.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    await phone.screenshot(path=artifacts / "study-phone.png", full_page=True)
    assert phone.script_errors == []


async def test_a_spec_with_an_error_shows_the_fields_message_at_its_line(stack, browser, artifacts):
    base, key = stack.http_url(), stack.api_key
    page = await _page(browser)
    await dashboard_sign_in(page, base, key)
    await page.get_by_role("link", name="New study").first.click()
    editor = page.get_by_label("Study spec (YAML)")
    demo = await editor.input_value()
    assert "name: sentiment-demo" in demo  # it starts from the demo spec
    # The spec check's error: the pydantic field and its line.
    await editor.fill(demo.replace("max_trials: 8", "max_trials: 0"))
    await page.get_by_role("button", name="Create study").click()
    error = page.locator("#spec-error")
    await error.get_by_text("budget.max_trials").wait_for()
    assert "line 30" in await error.inner_text() and "greater than 0" in await error.inner_text()
    assert await page.locator(".gutter span.bad").get_attribute("data-line") == "30"
    assert await editor.get_attribute("aria-invalid") == "true"
    await page.screenshot(path=artifacts / "new-study-error.png", full_page=True)
    # CreateStudy's own error (a warm start from a study that does not exist), at its line too.
    await editor.fill(demo + "warm_start:\n  from_study_id: st-nowhere\n")
    await page.get_by_role("button", name="Create study").click()
    await error.get_by_text("warm_start.from_study_id").wait_for()
    line = len(demo.splitlines()) + 2
    assert await page.locator(".gutter span.bad").get_attribute("data-line") == str(line)
    assert "no study" in await error.inner_text()
    # Fixed: the study is created and its page opens.
    await editor.fill(demo.replace("max_trials: 8", "max_trials: 2").replace("sentiment-demo\nmodel", "sentiment-demo\n  max_examples: 100\nmodel"))
    await page.get_by_role("button", name="Create study").click()
    await page.locator("#chart-objective").wait_for()
    study_id = page.url.rsplit("/", 1)[-1]
    assert study_id.startswith("st-")
    await _cancel(base, key, study_id)
    assert page.script_errors == []


async def test_a_read_only_key_cannot_cancel_a_study(stack, browser, artifacts):
    base, admin = stack.http_url(), stack.api_key
    reader = await create_key(stack, "default", keys_pb2.ROLE_READER)
    study = await _create(base, admin, _searched_spec("read-only-view", 40))
    try:
        page = await _page(browser)
        await dashboard_sign_in(page, base, reader)
        await page.goto(f"{base}/dashboard/#/studies/{study['id']}")
        cancel = page.get_by_role("button", name="Cancel study")
        await cancel.click()
        result = page.locator("#cancel-result")
        await result.get_by_text("ROLE_READER").wait_for()
        assert "CancelStudy needs ROLE_MEMBER" in await result.inner_text()
        await page.screenshot(path=artifacts / "read-only-cancel.png")
        assert (await _get(base, admin, study["id"]))["state"] in ("STUDY_STATE_RUNNING", "STUDY_STATE_PENDING")
    finally:
        await _cancel(base, admin, study["id"])


async def test_the_trainers_page_shows_each_live_trainer_with_its_slots_and_load(stack, browser, artifacts):
    page = await _page(browser)
    await dashboard_sign_in(page, stack.http_url(), stack.api_key)
    await page.get_by_role("link", name="Trainers").click()
    row = page.locator("#trainers tbody tr").first
    await row.get_by_role("rowheader", name="trainer-0").wait_for()
    cells = await row.locator("td").all_inner_texts()
    assert cells[0] == "cpu" and int(cells[1]) >= 1 and cells[3].strip().endswith("%")
    await page.screenshot(path=artifacts / "trainers.png")
    # The sign-in page, for the README.
    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_label("API key").wait_for()
    await page.screenshot(path=artifacts / "sign-in.png")
    assert page.script_errors == []


async def test_a_multi_objective_study_shows_its_pareto_front(stack, browser, artifacts):
    base, key = stack.http_url(), stack.api_key
    spec = _spec_json(name="pareto-view", strategy="random", budget={"max_trials": 6}, seed=9,
                      extra_objectives=[{"metric": "latency_ms", "direction": "minimize"}])
    study = await _create(base, key, spec)
    page = await _page(browser)
    await dashboard_sign_in(page, base, key)
    await page.goto(f"{base}/dashboard/#/studies/{study['id']}")
    await page.get_by_text("finished: no more updates").wait_for(timeout=240_000)
    done = await _get(base, key, study["id"])
    front = set(done["paretoTrialIds"])
    assert front
    # The stream can end before the page's first redraw (a study that finished before the page
    # opened): wait for the drawing, not for the end of the stream.
    await page.locator("#pareto-title").wait_for(state="visible")
    await page.locator(f"#chart-pareto[data-points='{len(front)}']").wait_for()
    drawn = await page.evaluate(
        "() => echarts.getInstanceByDom(document.getElementById('chart-pareto')).getOption().series.map(s => s.data.map(p => p[2]))")
    numbers = {t["id"]: t.get("number", 0) for t in done["trials"]
               if t["status"] == "TRIAL_STATUS_SUCCEEDED" and not t.get("repeatOf")}
    assert sorted(drawn[1]) == sorted(numbers[i] for i in front)  # the front, as the gateway computed it
    assert sorted(drawn[0] + drawn[1]) == sorted(numbers.values())  # and every other trial beside it
    await page.locator("#chart-pareto").screenshot(path=artifacts / "pareto.png")
    assert page.script_errors == []


async def test_the_pages_text_meets_wcag_aa_contrast(stack, browser):
    """Every visible piece of text (enabled controls included) has at least 4.5:1 contrast with
    the background it sits on (WCAG 2.1 AA), on each page."""
    page = await _page(browser)
    await dashboard_sign_in(page, stack.http_url(), stack.api_key)
    for route in ("#/studies", "#/new", "#/trainers"):
        await page.goto(f"{stack.http_url()}/dashboard/{route}")
        await page.locator("main h1").wait_for()
        await page.wait_for_timeout(500)  # the first refresh has drawn its rows
        low = await page.evaluate(CONTRAST_CHECK)
        assert low == [], (route, low)


# WCAG relative luminance and contrast of each text element's colour against its nearest opaque
# background (elements inside a disabled control are exempt, as WCAG exempts inactive controls).
CONTRAST_CHECK = """() => {
  const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length < 4 || c[3] === 1) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest(':disabled, [aria-hidden="true"], .visually-hidden, .skip-link, canvas')) continue;
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length) continue;
    const [a, b] = [lum(rgb(getComputedStyle(el).color).slice(0, 3)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) low.push(`${el.tagName}.${el.className}: ${ratio.toFixed(2)} "${el.textContent.trim().slice(0, 30)}"`);
  }
  return low;
}"""
