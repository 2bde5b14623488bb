"""The service's settings: one frozen object built at the edge (the CLI) and passed to the app."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fashion_search_pipeline import config

API_KEY_ENV = "FASHION_SEARCH_API_KEY"
CORS_ORIGINS_ENV = "FASHION_SEARCH_CORS_ORIGINS"
MAX_UPLOAD_MB_ENV = "FASHION_SEARCH_MAX_UPLOAD_MB"
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# Gather concurrent queries this long before encoding them as one batch (0: no micro-batching).
DEFAULT_BATCH_WINDOW_S = 0.004
DEFAULT_MAX_BATCH = 32


@dataclass(frozen=True)
class ServiceSettings:
    """Where the tables and models are, and the service's limits; the API key is kept out of repr."""

    db_uri: str
    models_file: str | None = None
    models_root: Path | None = None
    s3: config.S3Settings = field(default_factory=config.S3Settings)
    api_key: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    batch_window_s: float = DEFAULT_BATCH_WINDOW_S
    max_batch: int = DEFAULT_MAX_BATCH

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1024:
            raise ValueError(f"the upload limit must be at least 1 KiB, got {self.max_upload_bytes} bytes")
        if self.batch_window_s < 0 or self.max_batch < 1:
            raise ValueError(
                f"batch window must be >= 0 and max batch >= 1, got {self.batch_window_s}, {self.max_batch}"
            )

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str], settings: config.Settings | None = None, **overrides
    ) -> ServiceSettings:
        """The pipeline's `settings` (default: read from `environ`) plus the service's own variables
        (FASHION_SEARCH_API_KEY, FASHION_SEARCH_CORS_ORIGINS comma-separated, FASHION_SEARCH_MAX_UPLOAD_MB);
        `overrides` (command-line options) win when not None."""
        settings = settings or config.Settings.from_env(environ)
        values = {
            "db_uri": settings.db,
            "models_file": settings.models_file,
            "models_root": settings.models_dir,
            "s3": settings.s3,
            "api_key": environ.get(API_KEY_ENV) or None,
            "cors_origins": tuple(o.strip() for o in environ.get(CORS_ORIGINS_ENV, "").split(",") if o.strip()),
        }
        if environ.get(MAX_UPLOAD_MB_ENV):
            values["max_upload_bytes"] = int(float(environ[MAX_UPLOAD_MB_ENV]) * 1024 * 1024)
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)
