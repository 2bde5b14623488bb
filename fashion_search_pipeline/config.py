"""Where things live, read from the environment with local defaults under one data folder.

    FASHION_SEARCH_HOME     data folder (default ./data)
    FASHION_SEARCH_LANDING  where catalog drops land: a folder or s3://bucket/prefix (default $HOME/landing)
    FASHION_SEARCH_DB       LanceDB URI: a folder or s3://bucket/prefix (default $HOME/lancedb)
    FASHION_SEARCH_MODELS   a YAML/TOML model registry file (default $HOME/models.yaml if present,
                            else the built-in models)
    FASHION_SEARCH_ASSETS   where Dagster keeps asset values as parquet (default $HOME/assets)
    FASHION_SEARCH_S3_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN       S3 access, for any S3-compatible store
    DAGSTER_HOME            the Dagster instance (default $HOME/dagster)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

HOME_ENV = "FASHION_SEARCH_HOME"
LANDING_ENV = "FASHION_SEARCH_LANDING"
DB_ENV = "FASHION_SEARCH_DB"
MODELS_ENV = "FASHION_SEARCH_MODELS"
S3_ENDPOINT_ENV = "FASHION_SEARCH_S3_ENDPOINT_URL"
ASSETS_ENV = "FASHION_SEARCH_ASSETS"


def data_home() -> Path:
    """The local data folder that holds every default location."""
    return Path(os.environ.get(HOME_ENV) or "data").expanduser().resolve()


def landing_uri() -> str:
    """Where catalog drops land."""
    return os.environ.get(LANDING_ENV) or str(data_home() / "landing")


def db_uri() -> str:
    """The LanceDB database that holds the embedding tables."""
    return os.environ.get(DB_ENV) or str(data_home() / "lancedb")


def models_file() -> str | None:
    """The model registry file: $FASHION_SEARCH_MODELS, else $HOME/models.yaml if it exists, else None."""
    if os.environ.get(MODELS_ENV):
        return os.environ[MODELS_ENV]
    default = data_home() / "models.yaml"
    return str(default) if default.exists() else None


def dagster_home() -> Path:
    """The Dagster instance folder: $DAGSTER_HOME, else $HOME/dagster."""
    return Path(os.environ.get("DAGSTER_HOME") or data_home() / "dagster").expanduser().resolve()


def reports_dir() -> Path:
    """Local folder for evaluation reports, model checkpoints and other artifacts."""
    return data_home() / "reports"


@dataclass(frozen=True)
class S3Settings:
    """Access to an S3-compatible store; secrets are kept out of repr."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> "S3Settings":
        """Read the standard AWS variables plus FASHION_SEARCH_S3_ENDPOINT_URL."""
        env = os.environ
        return cls(
            endpoint_url=env.get(S3_ENDPOINT_ENV) or env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )

    def s3fs_options(self) -> dict:
        """Keyword arguments for s3fs.S3FileSystem / fsspec storage_options."""
        options: dict = {}
        if self.access_key_id:
            options["key"] = self.access_key_id
        if self.secret_access_key:
            options["secret"] = self.secret_access_key
        if self.session_token:
            options["token"] = self.session_token
        client_kwargs = {}
        if self.endpoint_url:
            client_kwargs["endpoint_url"] = self.endpoint_url
        if self.region:
            client_kwargs["region_name"] = self.region
        if client_kwargs:
            options["client_kwargs"] = client_kwargs
        return options

    def lancedb_options(self) -> dict[str, str]:
        """LanceDB (object_store) storage options."""
        options: dict[str, str] = {}
        if self.endpoint_url:
            options["aws_endpoint"] = self.endpoint_url
            if self.endpoint_url.startswith("http://"):
                options["allow_http"] = "true"
        if self.region:
            options["aws_region"] = self.region
        if self.access_key_id:
            options["aws_access_key_id"] = self.access_key_id
        if self.secret_access_key:
            options["aws_secret_access_key"] = self.secret_access_key
        if self.session_token:
            options["aws_session_token"] = self.session_token
        return options


def storage_options_for(uri: str, s3: S3Settings | None = None) -> dict:
    """fsspec storage options for `uri`: S3 settings for s3:// URIs, none for local paths."""
    if uri.startswith("s3://"):
        return (s3 or S3Settings.from_env()).s3fs_options()
    return {}


def lancedb_options_for(uri: str, s3: S3Settings | None = None) -> dict[str, str]:
    """LanceDB storage options for `uri`."""
    if uri.startswith("s3://"):
        return (s3 or S3Settings.from_env()).lancedb_options()
    return {}



def assets_uri() -> str:
    """Where the Dagster IO manager keeps asset values (parquet files): a folder or s3:// URI."""
    return os.environ.get(ASSETS_ENV) or str(data_home() / "assets")
