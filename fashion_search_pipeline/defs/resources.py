"""Dagster resources: where catalog data lives, and which CLIP models exist."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import ConfigurableResource, EnvVar
from dagster_aws.s3 import S3Resource

from fashion_search_pipeline import config
from fashion_search_pipeline.catalog.storage import filesystem_for
from fashion_search_pipeline.models.loading import LoadedClip, load_clip
from fashion_search_pipeline.models.registry import ModelSpec, served_specs
from fashion_search_pipeline.store import tables

if TYPE_CHECKING:
    import lancedb


class CatalogStorage(ConfigurableResource):
    """The landing area for drops and the LanceDB database, local folders or s3:// URIs, and the
    data folder (`home`: reports, paths in metadata)."""

    landing_uri: str
    db_uri: str
    home: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None

    def s3(self) -> config.S3Settings:
        """S3 access settings (secrets stay out of logs and repr)."""
        return config.S3Settings(
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            access_key_id=self.aws_access_key_id,
            secret_access_key=self.aws_secret_access_key,
            session_token=self.aws_session_token,
        )

    def options_for(self, uri: str) -> dict:
        """fsspec storage options for `uri` (none for local paths)."""
        return config.storage_options_for(uri, self.s3())

    def landing_options(self) -> dict:
        """fsspec storage options for the landing URI."""
        return self.options_for(self.landing_uri)

    def connect_db(self) -> lancedb.DBConnection:
        """Open the LanceDB database."""
        return tables.connect(self.db_uri, config.lancedb_options_for(self.db_uri, self.s3()))

    def read_bytes(self, uri: str) -> bytes:
        """Read one file of the landing area (an image) by its full URI."""
        fs, path = filesystem_for(uri, self.options_for(uri))
        return fs.cat_file(path)


class ModelRegistry(ConfigurableResource):
    """The named CLIP models: built-in defaults, or a YAML/TOML registry file; published models
    (domain-clip) under `models_root`. `problem`: why the code location serves the last good copy of
    the configured registry file instead of the file itself (None when the file loads)."""

    models_file: str | None = None
    models_root: str
    last_good_file: str | None = None
    problem: str | None = None

    def specs(self) -> dict[str, ModelSpec]:
        """Every registered model by name (from the last good copy while the file does not load)."""
        last_good = Path(self.last_good_file) if self.last_good_file else None
        return served_specs(self.models_file, models_root=Path(self.models_root), last_good=last_good)

    def load(self, name: str) -> LoadedClip:
        """Load (once per process) the model registered as `name`."""
        specs = self.specs()
        if name not in specs:
            raise KeyError(f"model {name!r} is not in the registry; registered: {sorted(specs)}")
        return load_clip(specs[name])


ENGINE_ENV = "FASHION_SEARCH_EMBEDDING_ENGINE"
ENGINES = ("local", "ray")


class EmbeddingEngine(ConfigurableResource):
    """Where the embedding step's encode stage runs: `local` (the step's own process) or `ray`.

    With `ray`, rows go through Ray Data on the cluster at `ray_address` (a head's host:port or
    ray://host:port; unset: a cluster started on this machine by `ray start`, else one in-process).
    """

    kind: str = "local"
    ray_address: str | None = None
    ray_actors: int = 1
    ray_actor_cpus: float = 1.0
    ray_actor_gpus: float = 0.0
    ray_batch_size: int | None = None

    def engine_for(self, storage: CatalogStorage):
        """The engine to hand sync_embeddings: None for local, a RayEngine reading with `storage`'s settings."""
        if self.kind not in ENGINES:
            raise ValueError(f"embedding engine {self.kind!r} is not one of {ENGINES} (set {ENGINE_ENV})")
        if self.kind == "local":
            return None
        from fashion_search_pipeline.scale.ray_engine import RayEngine, RaySettings

        settings = RaySettings(
            address=self.ray_address or None,
            actors=self.ray_actors,
            actor_cpus=self.ray_actor_cpus,
            actor_gpus=self.ray_actor_gpus,
            batch_size=self.ray_batch_size,
        )
        return RayEngine(settings, storage.s3())


def _sourced(value: str | None, variable: str | None):
    """An EnvVar naming the variable `value` was read from (Dagster shows its source, never its value)."""
    return EnvVar(variable) if variable else value


def storage_for(settings: config.Settings, environ: Mapping[str, str]) -> CatalogStorage:
    """CatalogStorage for `settings`; S3 settings read from `environ` reach Dagster as EnvVars."""
    s3, sources = settings.s3, settings.s3.source_variables(environ)
    return CatalogStorage(
        landing_uri=settings.landing,
        db_uri=settings.db,
        home=str(settings.home),
        s3_endpoint_url=_sourced(s3.endpoint_url, sources["endpoint_url"]),
        s3_region=_sourced(s3.region, sources["region"]),
        aws_access_key_id=_sourced(s3.access_key_id, sources["access_key_id"]),
        aws_secret_access_key=_sourced(s3.secret_access_key, sources["secret_access_key"]),
        aws_session_token=_sourced(s3.session_token, sources["session_token"]),
    )


def engine_from_env(environ: Mapping[str, str]) -> EmbeddingEngine:
    """EmbeddingEngine from FASHION_SEARCH_EMBEDDING_ENGINE (default local) and RAY_ADDRESS in `environ`."""
    return EmbeddingEngine(
        kind=_sourced("local", ENGINE_ENV if environ.get(ENGINE_ENV) else None),
        ray_address=_sourced(None, "RAY_ADDRESS" if environ.get("RAY_ADDRESS") else None),
    )


def s3_resource_for(storage: CatalogStorage) -> S3Resource:
    """dagster-aws's S3 resource (a boto3 client) with the same endpoint, region and credentials."""
    return S3Resource(
        endpoint_url=storage.s3_endpoint_url,
        region_name=storage.s3_region,
        aws_access_key_id=storage.aws_access_key_id,
        aws_secret_access_key=storage.aws_secret_access_key,
        aws_session_token=storage.aws_session_token,
    )
