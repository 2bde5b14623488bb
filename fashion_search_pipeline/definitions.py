"""The Dagster code location: assets, resources, sensors, schedules and jobs.

`dagster dev` loads `defs`, built from the environment (see fashion_search_pipeline.config).
The CLI and the tests call build_definitions() with their own model registry and locations.
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from fashion_search_pipeline import config
from fashion_search_pipeline.defs.catalog_assets import (
    catalog_deletions,
    catalog_items,
    cleaned_captions,
    image_manifest,
    raw_captions,
)
from fashion_search_pipeline.defs.domain_assets import domain_clip
from fashion_search_pipeline.defs.embedding_assets import build_embeddings_asset
from fashion_search_pipeline.defs.evaluation_assets import ann_index_recall, metrics_not_regressed, retrieval_evaluation
from fashion_search_pipeline.defs.io_manager import ParquetIOManager
from fashion_search_pipeline.defs.partitions import embedding_partitions
from fashion_search_pipeline.defs.resources import CatalogStorage, ModelRegistry, s3_resource_for, storage_from_env
from fashion_search_pipeline.defs.schedules import nightly_catalog_refresh
from fashion_search_pipeline.defs.sensors import catalog_automation_sensor, catalog_drop_job, catalog_drop_sensor
from fashion_search_pipeline.models.registry import load_registry


def build_definitions(
    *,
    models_file: str | None = None,
    storage: CatalogStorage | None = None,
    assets_uri: str | None = None,
) -> Definitions:
    """The code location for one model registry file, storage and asset folder (defaults: environment)."""
    storage = storage or storage_from_env()
    models = ModelRegistry(models_file=models_file)
    io_manager = ParquetIOManager(
        base_uri=assets_uri or config.assets_uri(),
        s3_endpoint_url=storage.s3_endpoint_url,
        s3_region=storage.s3_region,
        aws_access_key_id=storage.aws_access_key_id,
        aws_secret_access_key=storage.aws_secret_access_key,
    )
    embeddings = build_embeddings_asset(embedding_partitions(load_registry(models_file)))
    return Definitions(
        assets=[
            raw_captions,
            image_manifest,
            catalog_deletions,
            cleaned_captions,
            catalog_items,
            embeddings,
            domain_clip,
            retrieval_evaluation,
        ],
        asset_checks=[ann_index_recall, metrics_not_regressed],
        jobs=[catalog_drop_job],
        # Steps are light or share one loaded model: running them in the run's own process saves
        # a torch + open_clip import per step (about 20 s of a drop run on 2 cores).
        executor=in_process_executor,
        sensors=[catalog_drop_sensor, catalog_automation_sensor],
        schedules=[nightly_catalog_refresh],
        resources={
            "storage": storage,
            "models": models,
            "s3": s3_resource_for(storage),
            "io_manager": io_manager,
        },
    )


defs = build_definitions(models_file=config.models_file())
