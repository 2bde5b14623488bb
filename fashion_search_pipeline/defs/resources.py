"""Dagster resources: where catalog data lives, and which CLIP models exist."""

from __future__ import annotations

import os

import lancedb
from dagster import ConfigurableResource, EnvVar
from dagster_aws.s3 import S3Resource

from fashion_search_pipeline import config
from fashion_search_pipeline.catalog.storage import filesystem_for
from fashion_search_pipeline.models.loading import LoadedClip, load_clip
from fashion_search_pipeline.models.registry import ModelSpec, load_registry
from fashion_search_pipeline.store import tables


class CatalogStorage(ConfigurableResource):
    """The landing area for drops and the LanceDB database, local folders or s3:// URIs."""

    landing_uri: str
    db_uri: str
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

    def landing_options(self) -> dict:
        """fsspec storage options for the landing URI."""
        return config.storage_options_for(self.landing_uri, self.s3())

    def connect_db(self) -> lancedb.DBConnection:
        """Open the LanceDB database."""
        return tables.connect(self.db_uri, config.lancedb_options_for(self.db_uri, self.s3()))

    def read_bytes(self, uri: str) -> bytes:
        """Read one file of the landing area (an image) by its full URI."""
        fs, path = filesystem_for(uri, config.storage_options_for(uri, self.s3()))
        return fs.cat_file(path)


class ModelRegistry(ConfigurableResource):
    """The named CLIP models: built-in defaults, or a YAML/TOML registry file."""

    models_file: str | None = None

    def specs(self) -> dict[str, ModelSpec]:
        """Every registered model by name."""
        return load_registry(self.models_file)

    def load(self, name: str) -> LoadedClip:
        """Load (once per process) the model registered as `name`."""
        specs = self.specs()
        if name not in specs:
            raise KeyError(f"model {name!r} is not in the registry; registered: {sorted(specs)}")
        return load_clip(specs[name])


def _from_env(name: str):
    """An EnvVar when the variable is set (so Dagster shows its source, never its value), else None."""
    return EnvVar(name) if os.environ.get(name) else None


def storage_from_env() -> CatalogStorage:
    """CatalogStorage configured from FASHION_SEARCH_* and AWS_* variables, with local defaults."""
    region_var = "AWS_REGION" if os.environ.get("AWS_REGION") else "AWS_DEFAULT_REGION"
    return CatalogStorage(
        landing_uri=_from_env(config.LANDING_ENV) or config.landing_uri(),
        db_uri=_from_env(config.DB_ENV) or config.db_uri(),
        s3_endpoint_url=_from_env(config.S3_ENDPOINT_ENV),
        s3_region=_from_env(region_var),
        aws_access_key_id=_from_env("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=_from_env("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=_from_env("AWS_SESSION_TOKEN"),
    )


def models_from_env() -> ModelRegistry:
    """ModelRegistry reading the file named by FASHION_SEARCH_MODELS, if any."""
    return ModelRegistry(models_file=_from_env(config.MODELS_ENV))


def s3_resource_for(storage: CatalogStorage) -> S3Resource:
    """dagster-aws's S3 resource (a boto3 client) with the same endpoint, region and credentials."""
    return S3Resource(
        endpoint_url=storage.s3_endpoint_url,
        region_name=storage.s3_region,
        aws_access_key_id=storage.aws_access_key_id,
        aws_secret_access_key=storage.aws_secret_access_key,
        aws_session_token=storage.aws_session_token,
    )
