"""The Dagster UI as a user starts it (`dagster dev` with workspace.yaml), and headless Chromium to drive it.

Chromium is Debian's (`make browser` installs it); Playwright drives it through `executable_path`.
Screenshots go to $FASHION_SEARCH_TEST_ARTIFACTS/ui (default: <repo>/test-artifacts/ui).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from fashion_search_pipeline import config
from fashion_search_pipeline.demo_catalog import demo_items, write_drop
from fashion_search_pipeline_tests.data_folder import LOCATION_VARIABLES, write_tiny_registry

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
# The network is closed: Chromium must not try to reach Google's services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DROP_ID = "ui-001"
GOOD_ITEMS = 8
STARTUP_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_home(home: Path) -> None:
    """A data folder: one drop (8 good rows, a missing and a corrupt image), a tiny model, dagster.yaml."""
    drop = write_drop(home / "landing" / "drops" / DROP_ID, demo_items(variants=1)[:GOOD_ITEMS])
    (drop / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with open(drop / "captions.csv", "a", encoding="utf-8") as captions:
        captions.write("gone-1#images/gone.jpg#Nova Men Red Cotton Tshirt#Men#Tshirt#Red\n")
        captions.write("broken-1#images/broken.jpg#Nova Men Blue Cotton Tshirt#Men#Tshirt#Blue\n")
    write_tiny_registry(home, "tiny")
    (home / "dagster").mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster" / "dagster.yaml")


def _wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"dagster dev did not answer on {url} within {STARTUP_TIMEOUT_S}s; see {log}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the whole process group (webserver, daemon, code servers, runs), then SIGKILL what is left."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots and the dagster dev log go."""
    folder = Path(os.environ.get("FASHION_SEARCH_TEST_ARTIFACTS") or REPO / "test-artifacts") / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def ui_home(tmp_path_factory) -> Path:
    """The data folder (FASHION_SEARCH_HOME) the UI serves."""
    home = tmp_path_factory.mktemp("ui-home")
    _write_home(home)
    return home


@pytest.fixture(scope="module")
def dagster_ui(ui_home: Path, artifacts: Path):
    """`dagster dev -w workspace.yaml` on 127.0.0.1 (webserver + daemon), as `make dagster` runs it; yields its URL."""
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key not in LOCATION_VARIABLES}
    env.update({config.HOME_ENV: str(ui_home), "DAGSTER_HOME": str(ui_home / "dagster")})
    log = artifacts / "dagster-dev.log"
    with open(log, "wb") as output:
        dagster = str(Path(sys.executable).parent / "dagster")
        process = subprocess.Popen(
            [dagster, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(url, process, log)
        yield url
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, which `make test` installs through `make browser`."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (Debian's chromium package)")
    return CHROMIUM


@pytest.fixture(scope="module")
def page(chromium: str, dagster_ui: str, tmp_path_factory):
    """A headless Chromium page (fresh profile) on the UI, its first-visit dialog dismissed."""
    expect.set_options(timeout=30_000)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000},
        )
        browser_page: Page = context.new_page()
        browser_page.set_default_timeout(60_000)
        browser_page.goto(dagster_ui, wait_until="networkidle")
        browser_page.get_by_role("button", name="Skip").click()  # "Join the Dagster community", once per instance
        try:
            yield browser_page
        finally:
            context.close()
