"""The Dagster code location: assets, resources, sensors, schedules and jobs.

`dagster dev -w workspace.yaml`, `dg` and `dagster definitions validate` load `defs`, a lazily built
`@dg.definitions` function: Settings are read from the environment once, when Dagster loads it, here
at the edge. The CLI and the tests call build_definitions(settings) with their own Settings.

A registry file that stops loading (a typo while `dagster dev` runs) does not take the code location
down once it has loaded: the last good copy is served, the problem logged as an ERROR and shown on
the `embeddings` asset and its `models_available` check (see models.registry.load_registry_or_last_good).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg
from dagster import AssetsDefinition, Definitions, in_process_executor

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
from fashion_search_pipeline.models.registry import load_registry_or_last_good

# Dagster's logger: the ERROR reaches the webserver's / code server's console with Dagster's format.
log = dg.get_dagster_logger(__name__)


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
    models_root = str(settings.models_dir)
    served = load_registry_or_last_good(
        settings.models_file, models_root=settings.models_dir, last_good=settings.last_good_models_file
    )
    if served.problem:
        log.error("model registry: %s", served.problem)
    # Steps and ticks re-read the file; should it break before the next reload, they serve the copy.
    # (When the copy is what is served already, there is nothing further to fall back to.)
    last_good = str(settings.last_good_models_file) if settings.models_file and not served.problem else None
    models = ModelRegistry(models_file=served.models_file, models_root=models_root, last_good_file=last_good,
                           problem=served.problem)
    io_manager = ParquetIOManager(base_uri=settings.assets, storage=storage)
    embeddings = build_embeddings_asset(embedding_partitions(served.specs), served.models_file, models_root, last_good)
    if served.problem:
        embeddings = _with_registry_problem(embeddings, served.problem)
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


def _with_registry_problem(embeddings: AssetsDefinition, problem: str) -> AssetsDefinition:
    """`embeddings` with the registry file's problem on its asset page (metadata)."""
    return dg.map_asset_specs(lambda spec: spec.merge_attributes(metadata={"models_file_problem": problem}), [embeddings])[0]


@dg.definitions
def defs() -> Definitions:
    """The code location as `dagster dev`, `dg` and `dagster definitions validate` load it: Settings from the environment."""
    return build_definitions(config.Settings.from_env(os.environ), environ=os.environ)
