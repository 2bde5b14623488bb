"""The Dagster UI in a real browser: the asset graph, a drop materialized from it, its metadata,
and the sensors and schedule run by the daemon. Screenshots of each step go to test-artifacts/ui/.

The two tests share one `dagster dev` and run in file order: the first materializes drop ui-001.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
from playwright.sync_api import Page, expect

from fashion_search_pipeline_tests.ui.conftest import DROP_ID, GOOD_ITEMS

LOCATION = "fashion_search_pipeline"
ASSETS = ("raw_captions", "image_manifest", "catalog_deletions", "cleaned_captions", "catalog_items", "embeddings")
GROUPS = ("catalog", "embeddings")
AUTOMATIONS = ("catalog_automation_sensor", "catalog_drop_sensor", "nightly_catalog_refresh")
RUN_DONE = re.compile(r"^(Success|Failure|Canceled)$")
RUN_TIMEOUT_MS = 240_000


def _shot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"))


def _metadata(page: Page, key: str):
    """The value cell of metadata entry `key` in an asset page's Metadata table."""
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True))
    return row.get_by_role("cell").last


def test_graph_materialize_a_drop_and_read_its_metadata(page: Page, dagster_ui: str, ui_home: Path, artifacts: Path):
    expanded = ",".join(f"global@global:{group}" for group in GROUPS)
    page.goto(f"{dagster_ui}/asset-groups?expanded={expanded}", wait_until="networkidle")
    for name in ASSETS:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    _shot(page, artifacts, "01-asset-graph")

    page.goto(f"{dagster_ui}/locations/{LOCATION}/jobs/catalog_drop_job", wait_until="networkidle")
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
    page.get_by_text("Metadata", exact=True).scroll_into_view_if_needed()
    expect(_metadata(page, "accepted")).to_have_text(str(GOOD_ITEMS))
    expect(_metadata(page, "rejected")).to_have_text("2")
    expect(_metadata(page, "rejected/missing_image")).to_have_text("1")
    expect(_metadata(page, "rejected/undecodable_image")).to_have_text("1")
    expect(_metadata(page, "rejected_rows")).to_contain_text("gone-1")
    _shot(page, artifacts, "04-cleaned-captions-metadata")
    _metadata(page, "preview").get_by_text("[Show Markdown]").click()
    preview = page.locator(".dagster-dialog").filter(has_text="preview")
    expect(preview.get_by_role("row")).to_have_count(GOOD_ITEMS + 1)
    expect(preview).to_contain_text("tshirt-red-1")
    _shot(page, artifacts, "05-cleaned-captions-preview")
    preview.get_by_role("button", name="Close").click()

    page.goto(f"{dagster_ui}/assets/image_manifest", wait_until="networkidle")
    expect(_metadata(page, "dagster/row_count")).to_have_text(str(GOOD_ITEMS + 1))
    expect(_metadata(page, "undecodable")).to_have_text("1")

    # Nobody launches catalog_items: the daemon's catalog_automation_sensor does, after the drop.
    page.goto(f"{dagster_ui}/assets/catalog_items", wait_until="networkidle")
    expect(_metadata(page, "drops")).to_have_text("1", timeout=RUN_TIMEOUT_MS)
    expect(_metadata(page, "dagster/row_count")).to_have_text(str(GOOD_ITEMS))
    _shot(page, artifacts, "06-catalog-items-by-automation")


def _automation_row(page: Page, name: str):
    """The row of the Automation page that holds `name` and its on/off switch."""
    named = page.locator("div").filter(has=page.get_by_text(name, exact=True))
    return named.filter(has=page.get_by_role("checkbox")).last


def test_sensors_and_schedule_are_listed_and_turn_on(page: Page, dagster_ui: str, artifacts: Path):
    page.goto(f"{dagster_ui}/automation", wait_until="networkidle")
    for name in AUTOMATIONS:
        expect(page.get_by_text(name, exact=True)).to_be_visible()
    expect(_automation_row(page, "catalog_automation_sensor").get_by_role("checkbox").last).to_be_checked()
    for name in ("catalog_drop_sensor", "nightly_catalog_refresh"):
        row = _automation_row(page, name)
        switch = row.get_by_role("checkbox").last
        expect(switch).not_to_be_checked()
        row.locator("label", has=page.get_by_role("checkbox")).last.click()
        expect(switch).to_be_checked()
    _shot(page, artifacts, "07-automation-turned-on")

    page.goto(f"{dagster_ui}/locations/{LOCATION}/schedules/nightly_catalog_refresh", wait_until="networkidle")
    expect(page.get_by_text("Next tick")).to_be_visible()
    expect(page.get_by_text(re.compile(r"2:00:00 AM UTC"))).to_be_visible()
    expect(page.get_by_role("checkbox")).to_be_checked()
    _shot(page, artifacts, "08-nightly-schedule-running")

    # The daemon evaluates the drop sensor soon after it is turned on: ui-001 is complete and
    # new to the sensor's cursor, so its first tick requests a run for it.
    page.goto(f"{dagster_ui}/locations/{LOCATION}/sensors/catalog_drop_sensor", wait_until="networkidle")
    expect(page.get_by_text("1 run requested").first).to_be_visible(timeout=120_000)
    expect(page.get_by_text(f'"high_water": "{DROP_ID}"').first).to_be_visible()
    _shot(page, artifacts, "09-drop-sensor-tick")
