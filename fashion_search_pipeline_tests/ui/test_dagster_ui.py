"""The Dagster UI in a real browser: the asset graph, a drop materialized from it, its metadata,
and the sensors and schedule run by the daemon. Screenshots of each step go to test-artifacts/ui/.

The two tests share one `dagster dev` and run in file order: the first materializes drop ui-001.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import polars as pl
from dagster import Definitions
from playwright.sync_api import Page, expect

from fashion_search_pipeline.config import Settings
from fashion_search_pipeline.definitions import build_definitions
from fashion_search_pipeline.demo_catalog import demo_items, write_drop
from fashion_search_pipeline_tests.ui.conftest import DROP_ID, GOOD_ITEMS

SECOND_DROP_ID = "ui-002"

LOCATION = "fashion_search_pipeline"
RUN_DONE = re.compile(r"^(Success|Failure|Canceled)$")
# A drop run is ~45 s on an idle 2-core machine (each step imports torch in its own process); 3 min loaded.
RUN_TIMEOUT_MS = 420_000


def _code_location(ui_home: Path) -> Definitions:
    """The definitions `dagster dev` serves (same registry file), to know what the UI must show."""
    return build_definitions(Settings.from_env({}, home=ui_home, models_file=str(ui_home / "models.yaml")))


def _node_label(name: str) -> re.Pattern:
    """An asset's name as a zoomed-out graph node shows it: whole, or cut in the middle ("retrie…_evaluation")."""
    return re.compile(rf"^({re.escape(name)}|{re.escape(name[:3])}[^…]*…[^…]*{re.escape(name[-3:])})$")


def _shot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"))


def _metadata(page: Page, key: str):
    """The value cell of metadata entry `key` in an asset page's Metadata table."""
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True))
    return row.locator(":scope > td").last


def _reload_until_visible(page: Page, locator, timeout_ms: int) -> None:
    """Reload the page until `locator` shows (asset pages do not refresh their metadata by themselves)."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not locator.is_visible():
        assert time.monotonic() < deadline, f"{locator} did not show within {timeout_ms / 1000:.0f}s"
        page.wait_for_timeout(5_000)
        page.reload(wait_until="networkidle")


def _row_count(page: Page):
    """The "Row count" block of an asset page's status section (dagster/row_count)."""
    return page.get_by_text("Row count", exact=True).locator("xpath=..")


def _row_count_text(rows: int) -> re.Pattern:
    return re.compile(rf"^\s*Row count\s*{rows}\s*$")


def test_graph_materialize_a_drop_and_read_its_metadata(page: Page, dagster_ui: str, ui_home: Path, artifacts: Path):
    graph = _code_location(ui_home).resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    # The URL the UI itself shows once every group of the lineage graph is expanded.
    expanded = ",".join(f"global@global:{group}" for group in sorted(set(groups.values())))
    page.goto(f"{dagster_ui}/asset-groups?expanded={expanded}", wait_until="networkidle")
    for name in groups:
        expect(page.get_by_text(_node_label(name)).first).to_be_visible()
    _shot(page, artifacts, "01-asset-graph")

    page.goto(f"{dagster_ui}/locations/{LOCATION}/jobs/catalog_drop_job", wait_until="networkidle")
    expect(page.get_by_text("Loading...")).to_have_count(0)  # the dialog reloads while the graph loads
    page.get_by_role("button", name=re.compile("Materialize all")).click()
    launch = page.locator(".dagster-dialog").filter(has_text="Launch runs to materialize 4 assets")
    launch.get_by_text("Add a partition").click()
    add = page.locator(".dagster-dialog").filter(has_text="Add a partition for catalog_drops")
    add.get_by_role("textbox").fill(DROP_ID)
    add.get_by_role("button", name="Save").click()
    expect(launch.get_by_text("1 partition", exact=True)).to_be_visible()
    _shot(page, artifacts, "02-launch-dialog")
    launch.get_by_role("button", name="Launch 1 run").click()
    toast = page.get_by_role("region", name=re.compile("Notifications"))
    expect(toast).to_contain_text("Launched run")
    toast.get_by_text("View", exact=True).click()

    expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]+"))
    status = page.get_by_text(RUN_DONE).first
    expect(status).to_be_visible(timeout=RUN_TIMEOUT_MS)
    _shot(page, artifacts, "03-run-finished")
    assert status.inner_text() == "Success"
    cleaned_file = ui_home / "assets" / "cleaned_captions" / f"{DROP_ID}.parquet"
    assert pl.read_parquet(cleaned_file)["status"].value_counts().sort("status").rows() == [
        ("accepted", GOOD_ITEMS),
        ("rejected", 2),
    ]

    page.goto(f"{dagster_ui}/assets/cleaned_captions", wait_until="networkidle")
    expect(_row_count(page)).to_have_text(_row_count_text(GOOD_ITEMS + 2))
    page.get_by_text("Metadata", exact=True).evaluate("heading => heading.scrollIntoView({block: 'start'})")
    expect(_metadata(page, "accepted")).to_have_text(str(GOOD_ITEMS))
    expect(_metadata(page, "rejected")).to_have_text("2")
    expect(_metadata(page, "rejected/missing_image")).to_have_text("1")
    expect(_metadata(page, "rejected/undecodable_image")).to_have_text("1")
    expect(_metadata(page, "rejected_rows")).to_contain_text("gone-1")
    _shot(page, artifacts, "04-cleaned-captions-metadata")
    preview = _metadata(page, "preview")  # short enough that the UI renders the table inline
    expect(preview.get_by_role("row")).to_have_count(GOOD_ITEMS + 1)
    expect(preview).to_contain_text("tshirt-red-1")
    preview.scroll_into_view_if_needed()
    _shot(page, artifacts, "05-cleaned-captions-preview")

    page.goto(f"{dagster_ui}/assets/image_manifest", wait_until="networkidle")
    expect(_row_count(page)).to_have_text(_row_count_text(GOOD_ITEMS + 1))
    expect(_metadata(page, "decodable")).to_have_text(str(GOOD_ITEMS))
    expect(_metadata(page, "undecodable")).to_have_text("1")

    # Nobody launches catalog_items: the daemon's catalog_automation_sensor does, after the drop.
    page.goto(f"{dagster_ui}/assets/catalog_items", wait_until="networkidle")
    _reload_until_visible(page, _metadata(page, "drops"), RUN_TIMEOUT_MS)
    expect(_metadata(page, "drops")).to_have_text("1")
    expect(_row_count(page)).to_have_text(_row_count_text(GOOD_ITEMS))
    _shot(page, artifacts, "06-catalog-items-by-automation")


def _automation_row(page: Page, name: str):
    """The row of the Automation page that holds `name` and its on/off switch."""
    named = page.locator("div").filter(has=page.get_by_text(name, exact=True))
    return named.filter(has=page.get_by_role("checkbox")).last


def test_sensors_and_schedule_are_listed_and_turn_on(page: Page, dagster_ui: str, ui_home: Path, artifacts: Path):
    write_drop(ui_home / "landing" / "drops" / SECOND_DROP_ID, demo_items(variants=1)[GOOD_ITEMS : GOOD_ITEMS + 4])
    defs = _code_location(ui_home)
    automations = [sensor.name for sensor in defs.sensors] + [schedule.name for schedule in defs.schedules]
    assert {"catalog_automation_sensor", "catalog_drop_sensor", "nightly_catalog_refresh"} <= set(automations)
    page.goto(f"{dagster_ui}/automation", wait_until="networkidle")
    for name in automations:
        expect(page.get_by_text(name, exact=True)).to_be_visible()
    expect(_automation_row(page, "catalog_automation_sensor").get_by_role("checkbox").last).to_be_checked()
    for name in ("catalog_drop_sensor", "nightly_catalog_refresh"):
        row = _automation_row(page, name)
        switch = row.get_by_role("checkbox").last
        expect(switch).not_to_be_checked()
        row.locator("label", has=page.get_by_role("checkbox")).last.click()
        expect(switch).to_be_checked()
        expect(switch).to_be_enabled()  # disabled while the instance stores the change
    _shot(page, artifacts, "07-automation-turned-on")

    page.goto(f"{dagster_ui}/locations/{LOCATION}/schedules/nightly_catalog_refresh", wait_until="networkidle")
    expect(page.get_by_text("Next tick")).to_be_visible()
    expect(page.get_by_text(re.compile(r"2:00:00 AM UTC"))).to_be_visible()
    expect(page.get_by_role("checkbox")).to_be_checked()  # a fresh page: the state the instance stored
    _shot(page, artifacts, "08-nightly-schedule-running")

    # The daemon evaluates the drop sensor soon after it is turned on. A drop already cleaned by
    # hand is not run again; ui-002 is complete and new, so the first tick requests one run for it.
    page.goto(f"{dagster_ui}/locations/{LOCATION}/sensors/catalog_drop_sensor", wait_until="networkidle")
    expect(page.get_by_text("1 run requested").first).to_be_visible(timeout=120_000)
    expect(page.get_by_text(f'"high_water": "{SECOND_DROP_ID}"').first).to_be_visible()
    _shot(page, artifacts, "09-drop-sensor-tick")
