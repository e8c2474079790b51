"""The cockpit as operators see it: `dagster dev` over a temporary DAGSTER_HOME with one materialised
business date, asserted through the webserver's GraphQL (robust) and in headless Chromium (what the UI
shows; screenshots go to `test-artifacts/`, ignored by git). A backfill over a date range is launched
with `dagster job backfill` and carried out by the daemon `dagster dev` runs.

Needs Debian's `chromium` and `chromium-driver` for the browser test (skipped with the reason otherwise);
the GraphQL and backfill tests need only the project's own dependencies.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciliation_pipeline.defs.resources import ReconResource
from reconciliation_pipeline.runner import run_range
from tests.integration.test_dagster_operations import make_demo_lake

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DAY = dt.date(2026, 3, 4)
BACKFILL = (dt.date(2026, 3, 2), dt.date(2026, 3, 3))
LOCATION = "reconciliation_pipeline.definitions:defs"  # the code location, as workspace.yaml names it
ASSETS = {
    "landed_transactions",
    "settlement_lines",
    "bank_statements",
    "reconciliation",
    "outcomes",
    "exceptions",
    "daily_report",
}
SERVER_START_TIMEOUT = 240
#: Each run of the backfill is launched by the daemon in its own process (the job executes in-process);
#: generous, as the machine may be shared.
BACKFILL_TIMEOUT = 1200
STOP_GRACE = 20
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@dataclass
class Cockpit:
    url: str
    env: dict[str, str]
    data: Path
    log: Path

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the process group this test started (dagster dev, its webserver, daemon and code servers):
    Ctrl-C first, as an operator would; `dagster dev` 1.13 does not always exit after it, so the group is
    killed once the grace period is over."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_GRACE)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cockpit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cockpit]:
    import dagster as dg

    root = tmp_path_factory.mktemp("cockpit")
    data = make_demo_lake(root, days=3, per_day=30)
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        runs = run_range(DAY, DAY, resource=ReconResource(data_dir=str(data)), instance=instance)
    finally:
        instance.dispose()
    assert runs and runs[0].success, runs

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECON_")}
    env |= {"DAGSTER_HOME": str(home), "RECON_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"}
    log = root / "dagster-dev.log"
    dagster = str(Path(sys.executable).with_name("dagster"))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [dagster, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cockpit = Cockpit(f"http://127.0.0.1:{port}", env, data, log)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            assert proc.poll() is None, f"dagster dev exited:\n{log.read_text()[-4000:]}"
            try:
                nodes = cockpit.graphql("{ assetNodes { assetKey { path } } }")["assetNodes"]
                if nodes:
                    break
            except (httpx.HTTPError, AssertionError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"dagster dev not serving after {SERVER_START_TIMEOUT}s:\n{log.read_text()[-4000:]}"
                )
            time.sleep(2)
        yield cockpit
    finally:
        _stop(proc)


CHECK_EXECUTIONS = """
query($key: AssetKeyInput!, $check: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $check, limit: 20) {
    runId status partition evaluation { success partition }
  }
}"""

ASSET_CHECKS = """
{ assetNodes { assetKey { path } groupName
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }"""


def _checks(cockpit: Cockpit) -> dict[str, dict[str, bool]]:
    nodes = cockpit.graphql(ASSET_CHECKS)["assetNodes"]
    return {
        "/".join(n["assetKey"]["path"]): {
            c["name"]: c["blocking"] for c in n["assetChecksOrError"].get("checks", [])
        }
        for n in nodes
    }


def _executions(cockpit: Cockpit, asset: str, check: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cockpit.graphql(CHECK_EXECUTIONS, key={"path": [asset]}, check=check)[
        "assetCheckExecutions"
    ]
    return found


def test_graphql_shows_the_asset_graph_and_the_partitions_check_results(cockpit: Cockpit) -> None:
    checks = _checks(cockpit)
    assert set(checks) == ASSETS
    assert checks["reconciliation"] == {
        "every_record_has_one_outcome": True,
        "outcome_schema": True,
        "ge_reconciliation_outcomes": True,
        "accuracy_vs_ground_truth": True,
    }
    assert checks["exceptions"] == {"ge_exception_queue": True}
    assert checks["outcomes"] == {"store_control_totals": True}
    for asset, names in checks.items():
        for name in names:
            runs = [e for e in _executions(cockpit, asset, name) if e["partition"] == DAY.isoformat()]
            assert runs, f"{asset}:{name} has no execution for {DAY}"
            if runs[0]["status"] != "SUCCEEDED" or not runs[0]["evaluation"]["success"]:
                all_runs = cockpit.graphql(
                    "{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"
                )
                raise AssertionError(f"{asset}:{name} on {DAY}: {runs}\nruns: {all_runs}")


def _browser() -> Any:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(
            f"Debian's chromium and chromium-driver are needed ({CHROMIUM}, {CHROMEDRIVER}): "
            "apt-get install -y chromium chromium-driver"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:  # pragma: no cover - selenium is a dev dependency
        pytest.skip(f"selenium is not installed: {exc}")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=2560,1300"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


def _wait_for_text(driver: Any, texts: set[str], timeout: float = 90) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    def seen(d: Any) -> str | bool:
        body: str = d.find_element("tag name", "body").text
        return body if all(t in body for t in texts) else False

    try:
        found: str = WebDriverWait(driver, timeout, poll_frequency=1).until(seen)
    except Exception as exc:
        body = driver.find_element("tag name", "body").text
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "dagster-ui-timeout.png"))
        raise AssertionError(f"the page never showed {sorted(texts)}; it showed:\n{body[:3000]}") from exc
    return found


def _dismiss_welcome(driver: Any) -> None:
    """Close the first-visit "Join the Dagster community" dialog if it shows (it covers the graph)."""
    for button in driver.find_elements("xpath", "//button[normalize-space()='Skip']"):
        if button.is_displayed():
            button.click()


def test_the_ui_shows_the_asset_graph_and_a_partitions_checks(cockpit: Cockpit) -> None:
    driver = _browser()
    ARTIFACTS.mkdir(exist_ok=True)
    graph_png = ARTIFACTS / "dagster-asset-graph.png"
    checks_png = ARTIFACTS / "dagster-reconciliation-checks.png"
    try:
        driver.get(f"{cockpit.url}/locations/__repository__@{LOCATION}/asset-groups/reconciliation")
        body = _wait_for_text(driver, ASSETS | {"4 / 4 Passed"})
        _dismiss_welcome(driver)
        # Every node of the graph is drawn with its checks' summary for the latest materialisation.
        assert body.count("1 / 1 Passed") == 4, body[:3000]  # landed, settlement, outcomes, exceptions
        time.sleep(1)
        driver.save_screenshot(str(graph_png))

        driver.get(f"{cockpit.url}/assets/reconciliation?view=checks")
        names = {
            "every_record_has_one_outcome",
            "outcome_schema",
            "ge_reconciliation_outcomes",
            "accuracy_vs_ground_truth",
        }
        body = _wait_for_text(
            driver, names | {"Partition", DAY.isoformat(), "This is a blocking asset check."}
        )
        _dismiss_welcome(driver)
        assert body.count("Succeeded") >= len(names), body[:3000]
        assert "Failed" not in body, body[:3000]
        time.sleep(1)
        driver.save_screenshot(str(checks_png))
    finally:
        driver.quit()
    assert graph_png.stat().st_size > 10_000 and checks_png.stat().st_size > 10_000


RUNS = """
query($backfill: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $backfill}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""


@pytest.mark.timeout(BACKFILL_TIMEOUT + 300)
def test_a_backfill_over_a_date_range_runs_every_date_through_the_daemon(cockpit: Cockpit) -> None:
    dagster = str(Path(sys.executable).with_name("dagster"))
    first, last = (d.isoformat() for d in BACKFILL)
    done = subprocess.run(
        [
            dagster,
            "job",
            "backfill",
            "-w",
            "workspace.yaml",
            "-j",
            "reconcile_business_date",
            "--from",
            first,
            "--to",
            last,
            "--noprompt",
        ],
        cwd=ROOT,
        env=cockpit.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    backfill = done.stdout.split("Launched backfill job `", 1)[1].split("`", 1)[0]

    deadline = time.monotonic() + BACKFILL_TIMEOUT
    while True:
        runs = cockpit.graphql(RUNS, backfill=backfill)["runsOrError"]["results"]
        statuses = {r["runId"]: r["status"] for r in runs}
        if len(runs) == 2 and all(s in ("SUCCESS", "FAILURE", "CANCELED") for s in statuses.values()):
            break
        if time.monotonic() > deadline:
            raise AssertionError(
                f"backfill {backfill} not finished after {BACKFILL_TIMEOUT}s: {statuses}\n"
                f"{cockpit.log.read_text()[-4000:]}"
            )
        time.sleep(3)
    partitions = {next(t["value"] for t in r["tags"] if t["key"] == "dagster/partition") for r in runs}
    assert partitions == {first, last}
    assert set(statuses.values()) == {"SUCCESS"}, statuses
    for day in (first, last):
        evaluations = [
            e
            for e in _executions(cockpit, "reconciliation", "ge_reconciliation_outcomes")
            if e["partition"] == day
        ]
        assert evaluations and evaluations[0]["evaluation"]["success"]
    for day in BACKFILL:
        assert (cockpit.data / "lake" / "exceptions" / f"date={day.isoformat()}" / "part-0.parquet").exists()
