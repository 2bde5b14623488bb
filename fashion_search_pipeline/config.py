"""The pipeline's settings: one frozen value, read once at the edge (CLI, code location, service start).

    FASHION_SEARCH_HOME     data folder (default ./data)
    FASHION_SEARCH_LANDING  where catalog drops land: a folder or s3://bucket/prefix (default $HOME/landing)
    FASHION_SEARCH_DB       LanceDB URI: a folder or s3://bucket/prefix (default $HOME/lancedb)
    FASHION_SEARCH_MODELS   a YAML/TOML model registry file (default $HOME/models.yaml if present,
                            else the built-in models)
    FASHION_SEARCH_ASSETS   where Dagster keeps asset values as parquet (default $HOME/assets)
    FASHION_SEARCH_TIMEZONE the nightly schedule's timezone (default UTC)
    FASHION_SEARCH_S3_ENDPOINT_URL (or AWS_ENDPOINT_URL), AWS_REGION (or AWS_DEFAULT_REGION),
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
                            S3 access, for any S3-compatible store
    DAGSTER_HOME            the Dagster instance (default $HOME/dagster)

Published models (domain-clip) live under $HOME/models (Settings.models_dir); the code location keeps
a copy of the last registry file that loaded as $HOME/models.last-good.yaml (see definitions).

Only `Settings.from_env` reads these variables; everything else takes a Settings (or its S3Settings).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

HOME_ENV = "FASHION_SEARCH_HOME"
LANDING_ENV = "FASHION_SEARCH_LANDING"
DB_ENV = "FASHION_SEARCH_DB"
MODELS_ENV = "FASHION_SEARCH_MODELS"
S3_ENDPOINT_ENV = "FASHION_SEARCH_S3_ENDPOINT_URL"
ASSETS_ENV = "FASHION_SEARCH_ASSETS"
TIMEZONE_ENV = "FASHION_SEARCH_TIMEZONE"
LAST_GOOD_MODELS_FILE = "models.last-good.yaml"

# Each S3 setting and the variables it is read from, first set wins.
S3_VARIABLES = {
    "endpoint_url": (S3_ENDPOINT_ENV, "AWS_ENDPOINT_URL"),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "access_key_id": ("AWS_ACCESS_KEY_ID",),
    "secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "session_token": ("AWS_SESSION_TOKEN",),
}


def _first_set(env: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    return next((env[name] for name in names if env.get(name)), None)


@dataclass(frozen=True)
class S3Settings:
    """Access to an S3-compatible store; secrets are kept out of repr."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> S3Settings:
        """Read the standard AWS variables plus FASHION_SEARCH_S3_ENDPOINT_URL (see S3_VARIABLES)."""
        return cls(**{name: _first_set(env, names) for name, names in S3_VARIABLES.items()})

    def source_variables(self, env: Mapping[str, str]) -> dict[str, str | None]:
        """For each setting, the variable of `env` it was read from (None when set otherwise or unset)."""
        sources = {}
        for item in fields(self):
            value = getattr(self, item.name)
            names = S3_VARIABLES[item.name]
            sources[item.name] = next((n for n in names if value is not None and env.get(n) == value), None)
        return sources

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


@dataclass(frozen=True)
class Settings:
    """Every location and credential the pipeline, the CLI and the service use, read once at the edge."""

    home: Path
    landing: str
    db: str
    assets: str
    models_file: str | None
    dagster_home: Path
    timezone: str = "UTC"
    s3: S3Settings = field(default_factory=S3Settings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Settings:
        """Settings from `env` (default os.environ); keyword overrides (e.g. db=...) win when not None.

        A `home` override moves every location not set explicitly (in `env` or `overrides`) under it.
        """
        env = os.environ if env is None else env
        home = Path(overrides.pop("home", None) or env.get(HOME_ENV) or "data").expanduser().resolve()
        default_models = home / "models.yaml"
        values = {
            "home": home,
            "landing": env.get(LANDING_ENV) or str(home / "landing"),
            "db": env.get(DB_ENV) or str(home / "lancedb"),
            "assets": env.get(ASSETS_ENV) or str(home / "assets"),
            "models_file": env.get(MODELS_ENV) or (str(default_models) if default_models.exists() else None),
            "dagster_home": Path(env.get("DAGSTER_HOME") or home / "dagster").expanduser().resolve(),
            "timezone": env.get(TIMEZONE_ENV) or "UTC",
            "s3": S3Settings.from_env(env),
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    @property
    def reports_dir(self) -> Path:
        """Local folder for evaluation reports."""
        return self.home / "reports"

    @property
    def models_dir(self) -> Path:
        """Where trained models (domain-clip) are published: <home>/models (the registry's models root)."""
        return self.home / "models"

    @property
    def last_good_models_file(self) -> Path:
        """The copy of the last registry file that loaded, served while the file does not: <home>/models.last-good.yaml."""
        return self.home / LAST_GOOD_MODELS_FILE

    def storage_options(self, uri: str) -> dict:
        """fsspec/s3fs options for `uri` (none for local paths)."""
        return storage_options_for(uri, self.s3)

    def lancedb_options(self, uri: str) -> dict[str, str]:
        """LanceDB storage options for `uri` (none for local paths)."""
        return lancedb_options_for(uri, self.s3)


def storage_options_for(uri: str, s3: S3Settings) -> dict:
    """fsspec storage options for `uri`: `s3`'s options for s3:// URIs, none for local paths."""
    return s3.s3fs_options() if uri.startswith("s3://") else {}


def lancedb_options_for(uri: str, s3: S3Settings) -> dict[str, str]:
    """LanceDB storage options for `uri`: `s3`'s options for s3:// URIs, none for local paths."""
    return s3.lancedb_options() if uri.startswith("s3://") else {}
