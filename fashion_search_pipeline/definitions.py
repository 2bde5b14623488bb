"""The Dagster code location: assets, resources, sensors, schedules and jobs.

`dagster dev` loads `defs`, built from config.Settings.from_env() once, here at the edge.
The CLI and the tests call build_definitions(settings) with their own Settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from dagster import Definitions, in_process_executor

from fashion_search_pipeline import config
from fashion_search_pipeline.defs.catalog_assets import (
    catalog_deletions,
    catalog_items,
    cleaned_captions,
    image_manifest,
    raw_captions,
)
from fashion_search_pipeline.defs.checks import CHECKS
from fashion_search_pipeline.defs.domain_assets import domain_clip
from fashion_search_pipeline.defs.embedding_assets import build_embeddings_asset
from fashion_search_pipeline.defs.enrichment_assets import caption_image_mismatch, product_clusters, product_tags
from fashion_search_pipeline.defs.evaluation_assets import fusion_choices, metrics_not_regressed, retrieval_evaluation
from fashion_search_pipeline.defs.io_manager import ParquetIOManager
from fashion_search_pipeline.defs.partitions import embedding_partitions
from fashion_search_pipeline.defs.resources import (
    CatalogStorage,
    EmbeddingEngine,
    ModelRegistry,
    engine_from_env,
    s3_resource_for,
    storage_for,
)
from fashion_search_pipeline.defs.schedules import nightly_catalog_refresh
from fashion_search_pipeline.defs.sensors import catalog_automation_sensor, catalog_drop_job, catalog_drop_sensor
from fashion_search_pipeline.models.registry import load_registry


def build_definitions(
    settings: config.Settings,
    *,
    environ: Mapping[str, str] | None = None,
    storage: CatalogStorage | None = None,
    engine: EmbeddingEngine | None = None,
) -> Definitions:
    """The code location for `settings`. S3 values that came from `environ` (the environment the
    settings were read from) reach Dagster as EnvVars, so run config and metadata never hold them.
    `storage` replaces the CatalogStorage built from `settings` (its S3 access also reaches the IO
    manager and the S3 resource); `engine` the one from $FASHION_SEARCH_EMBEDDING_ENGINE."""
    environ = {} if environ is None else environ
    storage = storage or storage_for(settings, environ)
    models_file = settings.models_file
    models = ModelRegistry(models_file=models_file)
    io_manager = ParquetIOManager(base_uri=settings.assets, storage=storage)
    embeddings = build_embeddings_asset(embedding_partitions(load_registry(models_file)), models_file)
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
            fusion_choices,
            product_clusters,
            product_tags,
        ],
        asset_checks=[*CHECKS, metrics_not_regressed, caption_image_mismatch],
        jobs=[catalog_drop_job],
        # Steps are light or share one loaded model: running them in the run's own process saves
        # a torch + open_clip import per step (about 20 s of a drop run on 2 cores).
        executor=in_process_executor,
        sensors=[catalog_drop_sensor, catalog_automation_sensor],
        schedules=[nightly_catalog_refresh(settings.timezone)],
        resources={
            "storage": storage,
            "models": models,
            "engine": engine or engine_from_env(environ),
            "s3": s3_resource_for(storage),
            "io_manager": io_manager,
        },
    )


defs = build_definitions(config.Settings.from_env(os.environ), environ=os.environ)
