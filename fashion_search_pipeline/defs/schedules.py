"""The nightly refresh: reconcile every complete drop with the partitions, then refresh the catalog.

Embeddings (every model x modality), index maintenance and evaluation follow from `catalog_items`
through their eager automation conditions.
"""

from dagster import AssetKey, AssetSelection, RunRequest, ScheduleDefinition, ScheduleEvaluationContext, schedule
from dagster_aws.s3 import S3Resource

from fashion_search_pipeline.catalog.drops import drop_listing
from fashion_search_pipeline.defs.catalog_assets import DROP_ASSETS
from fashion_search_pipeline.defs.partitions import catalog_drops
from fashion_search_pipeline.defs.resources import CatalogStorage

NIGHTLY_CRON = "0 2 * * *"


def nightly_catalog_refresh(timezone: str = "UTC") -> ScheduleDefinition:
    """The 02:00 schedule in `timezone` (Settings.timezone, from FASHION_SEARCH_TIMEZONE)."""

    @schedule(
        name="nightly_catalog_refresh",
        cron_schedule=NIGHTLY_CRON,
        execution_timezone=timezone,
        target=AssetSelection.assets(*DROP_ASSETS, "catalog_items"),
        description=f"02:00 nightly ({timezone}): process complete drops the sensor missed and refresh "
        "catalog_items; embeddings, indexes and evaluation follow automatically. "
        "Timezone: $FASHION_SEARCH_TIMEZONE.",
    )
    def _nightly(context: ScheduleEvaluationContext, storage: CatalogStorage, s3: S3Resource):
        return missed_drop_runs(context, storage, s3)

    return _nightly


def missed_drop_runs(context: ScheduleEvaluationContext, storage: CatalogStorage, s3: S3Resource) -> list[RunRequest]:
    """Full listing of the landing area (not the sensor's incremental one), then one run per missed drop.

    Missed drops are registered as partitions here (schedules cannot return partition requests).
    """
    listing = drop_listing(storage.landing_uri, s3.get_client() if storage.landing_uri.startswith("s3://") else None)
    known = set(context.instance.get_dynamic_partitions(catalog_drops.name))
    missed = [d for d in listing.drop_ids_after(None) if d not in known and listing.is_complete(d)]
    tick = context.scheduled_execution_time.strftime("%Y-%m-%d")
    if missed:
        context.log.info(f"drops the sensor missed: {', '.join(missed)}")
        context.instance.add_dynamic_partitions(catalog_drops.name, missed)
    drop_assets = [AssetKey(name) for name in DROP_ASSETS]
    runs = [
        RunRequest(run_key=f"nightly:{tick}:drop:{d}", partition_key=d, asset_selection=drop_assets) for d in missed
    ]
    runs.append(RunRequest(run_key=f"nightly:{tick}:catalog", asset_selection=[AssetKey("catalog_items")]))
    return runs
