"""The README's Prefect-UI journey in a real browser: `python -m flows.sandbox` started here,
Playwright driving the system's Chromium (headless; no browser download) through it.

    ./dev ui          (UI_SCREENSHOTS=DIR, default artifacts/ui/; UI_CHROMIUM=PATH, default /usr/bin/chromium)

Steps, each with a screenshot NN-name.png and assertions on what the page shows:
work pools (the ECS pools say they are emulated) and blocks; the scheduled drift check
completed with its artifacts; a custom run of infra-update submitted as the README says
(Run → Custom run → the values to change → Submit) pauses with the plan, its page saying
what to do (Details → State Message), is resumed with approve and applies; a second one is rejected and ends Cancelled without a traceback; an
invalid one (memory that does not fit the cpu) ends Failed naming the field. On failure:
FAILED.png and the sandbox's logs land in the same directory.

Not part of `./dev test` (pyproject's testpaths is tests/): it needs Chromium and a few
minutes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path(os.environ.get("UI_SCREENSHOTS") or ROOT / "artifacts" / "ui")
CHROMIUM = os.environ.get("UI_CHROMIUM", "/usr/bin/chromium")
P = "data-flows"
ENV = "production"
DRIFT_CHECK = f"{P}-{ENV}-drift-check"  # the management deployments, named for what they are
INFRA_UPDATE = f"{P}-{ENV}-infra-update"
INFRA_PRUNE = f"{P}-{ENV}-infra-prune"
SECONDS = 1000  # Playwright timeouts are in milliseconds


def _free_port() -> int:
    from infra_tasks.emulator import free_port

    return free_port()


def _api(api: str, method: str, path: str, body: dict | None = None):
    req = urllib.request.Request(f"{api}{path}", method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """`python -m flows.sandbox` with a drift check every minute; yields (ui url, api url, log dir)."""
    state = tmp_path_factory.mktemp("sandbox")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "AWS_", "INFRA_"))}
    env["PREFECT_LOGGING_LEVEL"] = "INFO"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "retry_site"), str(ROOT)])  # sooner Prefect retries
    out = state / "sandbox.out"
    with open(out, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flows.sandbox", "--port", str(port), "--drift-cron",
                                 "* * * * *", "--state-dir", str(state), "--exit-after", "900"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "Sandbox is up." not in out.read_text(errors="replace"):
            assert proc.poll() is None, out.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the sandbox did not come up within 240 s"
            time.sleep(1)
        yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/api", state
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the sandbox stops its server, worker and emulator
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set UI_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium refuses its own sandbox.
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


class Journey:
    """One browser page plus numbered screenshots."""

    def __init__(self, page, ui: str) -> None:
        self.page, self.ui, self.n = page, ui, 0
        self.server_errors: list[str] = []  # API answers >= 500 the page received
        page.on("response", lambda r: self.server_errors.append(f"{r.status} {r.request.method} {r.url}")
                if r.status >= 500 else None)

    def shot(self, name: str) -> None:
        self.n += 1
        self.page.screenshot(path=str(SHOTS / f"{self.n:02d}-{name}.png"), full_page=True)

    def goto(self, path: str) -> None:
        self.page.goto(self.ui + path, wait_until="domcontentloaded")

    def text(self, text: str | re.Pattern, timeout: float = 30, exact: bool = False):
        """Waits (bounded) until `text` is visible; returns the locator."""
        from playwright.sync_api import expect

        loc = self.page.get_by_text(text, exact=exact).filter(visible=True).first
        expect(loc).to_be_visible(timeout=timeout * SECONDS)
        return loc

    def choose(self, label: str, option: str) -> None:
        """Picks `option` in the schema form's select labelled `label` (opened from the keyboard)."""
        self.field(label).locator(".p-select-button__control").press("ArrowDown")
        self.page.get_by_role("option", name=option, exact=True).click()

    def custom_run(self, deployment_id: str, choices: dict[str, str], name: str) -> str:
        """The README's way: the deployment's page → Run → Custom run → the values → Submit →
        View run. Returns the flow run's id."""
        self.goto(f"/deployments/deployment/{deployment_id}")
        self.text("flows/update.py:infra_update")
        self.button("Run").click()
        self.page.get_by_text("Custom run", exact=True).click()
        self.page.wait_for_url(re.compile(r"/run(\?|$)"), timeout=30 * SECONDS)
        self.text("What to change; empty fields keep their current value.")
        from playwright.sync_api import expect

        expect(self.field("Environment").get_by_role("textbox")).to_have_value(ENV)  # the deployment saves only this
        for label, option in choices.items():
            self.choose(label, option)
        self.shot(f"{name}-form")
        self.submit("Submit", "scheduled to start")
        self.page.get_by_role("button", name="View run").last.click()
        self.page.wait_for_url(re.compile(r"/runs/flow-run/"), timeout=30 * SECONDS)
        return self.page.url.rsplit("/", 1)[-1].split("?")[0]

    def field(self, label: str):
        """The schema form's property labelled `label` (the innermost one holding that label)."""
        return self.page.locator(".schema-form-property").filter(
            has=self.page.get_by_text(label, exact=True)).last

    def button(self, name: str):
        return self.page.get_by_role("button", name=name, exact=True).filter(visible=True).first

    def submit(self, button: str, expected: str | re.Pattern, timeout: float = 30, exact: bool = False) -> None:
        """Clicks `button` until `expected` shows. The sandbox's SQLite server answers 503 now
        and then under load (a flow run writing at the same moment); the UI then shows "Oops.
        Something went wrong." and a person clicks again: so does this, at most three times."""
        from playwright.sync_api import expect

        oops = self.page.get_by_text("Something went wrong")
        done = self.page.get_by_text(expected, exact=exact).filter(visible=True).first
        for _ in range(3):
            seen = oops.count()
            self.button(button).click()
            deadline = time.monotonic() + timeout
            while not done.is_visible() and oops.count() <= seen and time.monotonic() < deadline:
                time.sleep(0.5)
            if done.is_visible() or oops.count() <= seen:
                break
            print(f"{button!r}: the UI said 'Something went wrong' ({self.server_errors[-1:]})")
            self.shot(f"retry-{button.lower()}")
            if not self.button(button).is_visible():  # the click went through; something else failed
                break
            time.sleep(2)
        expect(done).to_be_visible(timeout=timeout * SECONDS)

    def body(self) -> str:
        return self.page.locator("body").inner_text()


@pytest.mark.timeout(900)
def test_readme_ui_journey(sandbox, browser) -> None:
    ui, api, state = sandbox
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30 * SECONDS)
    j = Journey(page, ui)
    started = time.monotonic()
    try:
        _journey(j, api)
    except BaseException:
        page.screenshot(path=str(SHOTS / "FAILED.png"), full_page=True)
        (SHOTS / "server-errors.txt").write_text("\n".join(j.server_errors) + "\n")
        for log in ("sandbox.out", "server.log", "worker.log"):
            if (state / log).exists():
                shutil.copy(state / log, SHOTS / log)
        raise
    finally:
        print(f"UI journey: {time.monotonic() - started:.0f}s; screenshots in {SHOTS}; "
              f"server errors the page saw: {j.server_errors or 'none'}")


def _journey(j: Journey, api: str) -> None:
    # 1. Work pools: the two ECS pools (emulated, and saying so) and the sandbox's process pool.
    j.goto("/work-pools")
    j.text("3 Work pools")
    for pool in (f"{P}-main", f"{P}-staging", f"{P}-{ENV}-sandbox"):
        j.text(pool, exact=True)
    j.text(f"Flow runs of deployment type main on ECS Fargate ({P}). Sandbox: no ECS worker runs here")
    j.text(f"management flows run on the process pool {P}-{ENV}-sandbox")
    j.shot("work-pools")

    # 2. Blocks: credentials and bucket per deployment type.
    j.goto("/blocks")
    j.text("4 Blocks")
    for block in (f"{P}-main", f"{P}-main-flows", f"{P}-staging", f"{P}-staging-flows"):
        j.text(block, exact=True)
    j.text("AWS Credentials")
    j.text("S3 Bucket")
    j.shot("blocks")

    deployments = {(d["name"], d["entrypoint"].rsplit(":", 1)[-1]): d["id"]
                   for d in _api(api, "POST", "/deployments/filter", {})}
    drift_id, update_id = deployments[(DRIFT_CHECK, "drift_check")], deployments[(INFRA_UPDATE, "infra_update")]

    # 3. The scheduled drift check (cron every minute) completes; its run page shows the
    #    result in its logs and the drift artifacts.
    j.goto("/deployments")
    j.text("Every minute every day")
    # The list shows each deployment's name large (the flow's only in small print): they differ.
    j.text(DRIFT_CHECK, exact=True)
    j.text(INFRA_UPDATE, exact=True)
    j.text(INFRA_PRUNE, exact=True)
    j.shot("deployments")
    deadline = time.monotonic() + 180
    while True:
        runs = _api(api, "POST", "/flow_runs/filter", {"deployments": {"id": {"any_": [drift_id]}},
                                                       "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}})
        if runs:
            break
        assert time.monotonic() < deadline, "no scheduled drift check completed within 180 s"
        time.sleep(3)
    j.goto(f"/deployments/deployment/{drift_id}")
    j.text(runs[0]["name"], exact=True)
    j.text("Completed", exact=True)
    j.shot("drift-check-deployment")
    j.page.get_by_role("link", name=runs[0]["name"], exact=True).first.click()
    j.text("auto-scheduled", exact=True)
    j.text(re.compile(r"Drift check of production: 56 IN_SYNC, 0 MODIFIED, 0 DELETED"))
    j.shot("drift-check-run")
    j.text("Artifacts", exact=True).click()
    j.text(f"drift-{ENV}", exact=True)
    j.text(f"drift-{ENV}-summary", exact=True)
    j.shot("drift-check-artifacts")

    # 4. infra-update, custom run with the values to change → paused with the plan → Resume →
    #    approve → applied.
    run_id = j.custom_run(update_id, {"Flow Cpu (Optional)": "2,048", "Flow Memory (Optional)": "4,096"},
                          "approve")
    j.text("Waiting for approval: click Resume", timeout=120)
    j.text("Paused", exact=True)
    j.shot("approve-paused")
    # The run's own page says what to do: Details -> State Message (the Paused state's message,
    # cut at 70 characters until "See More").
    from playwright.sync_api import expect

    j.text("Details", exact=True).click()
    message = j.page.locator(".p-key-value").filter(has=j.page.get_by_text("State Message", exact=True))
    expect(message).to_contain_text("Waiting for approval: click Resume, then approve or reject; 2 changes")
    message.get_by_text("See More").click()
    expect(message).to_contain_text(f"2 changes, plan in artifact infra-update-{ENV}-plan and in the Resume form")
    j.shot("approve-paused-details")
    j.text("Logs", exact=True).click()  # back where the run's end shows
    j.button("Resume").click()
    j.text("Approve this change to")
    j.text("2 resources change (full plan: artifact")
    j.text(f"prefect.work_pool/{P}-main", exact=True)
    j.text("defaults.cpu: 1024 -> 2048")
    j.shot("approve-resume-form")
    j.choose("Decision", "approve")
    j.field("Comment (Optional)").get_by_role("textbox").fill("ui journey test")
    j.shot("approve-decided")
    j.submit("Submit", "Completed", exact=True, timeout=180)
    j.text(re.compile(r"Finished in state Completed"))
    j.shot("approve-completed")
    # Applied: the pool's defaults moved (the pool's page shows its base job configuration).
    j.goto(f"/work-pools/work-pool/{P}-main")
    j.text("Base Job Configuration")
    assert re.search(r"CPU\s+2048\s+Memory\s+4096", j.body()), j.body()[-3000:]
    j.shot("approve-applied-pool")

    # 5. A second request, rejected → Cancelled with one message and no traceback.
    run_id2 = j.custom_run(update_id, {"Flow Cpu (Optional)": "4,096", "Flow Memory (Optional)": "8,192"},
                           "reject")
    assert run_id2 != run_id
    j.text("Waiting for approval: click Resume", timeout=120)
    j.button("Resume").click()
    j.text("defaults.cpu: 2048 -> 4096")
    j.choose("Decision", "reject")
    j.shot("reject-decided")
    j.submit("Submit", "Cancelled", exact=True, timeout=120)
    j.text("rejected, nothing was changed")
    j.shot("reject-cancelled")
    assert "Traceback" not in j.body()

    # 6. An invalid request (memory that does not fit the cpu) → Failed naming the field.
    #    The README's example: agent_memory 512 with the agent's cpu 1024 (infra.toml).
    j.custom_run(update_id, {"Agent Memory (Optional)": "512"}, "invalid")
    j.text("Failed", exact=True, timeout=120)
    j.text(re.compile(r"invalid request, nothing was changed: agent_memory = 512: "
                      r"Fargate does not accept cpu 1024 with memory 512"), timeout=60)
    j.shot("invalid-failed")
    assert "Traceback" not in j.body()
