"""The search service as a Ray Serve application: replicas of the service's own ASGI app, autoscaled.

Each replica builds the same FastAPI app `fashion-search serve` runs under uvicorn (service.app),
so routes, limits, the query encoder's micro-batching (concurrent queries in one replica are
encoded as one batch) and /readyz are the same. Serve adds replicas when requests in flight
per replica pass `target_ongoing_requests`, between `min_replicas` and `max_replicas`.

Started by `fashion-search serve --ray`, or by `serve run deploy/serve.yaml` (build_app).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from fashion_search_pipeline.scale.ray_engine import connect

if TYPE_CHECKING:
    from fashion_search_pipeline.service.settings import ServiceSettings

APP_NAME = "fashion-search"
DEPLOYMENT_NAME = "search"


@dataclass(frozen=True)
class ServeScaling:
    """Replica counts and sizes. A replica loads every model once; queries beyond
    target_ongoing_requests in flight per replica make Serve add one, up to max_replicas."""

    min_replicas: int = 1
    max_replicas: int = 4
    target_ongoing_requests: float = 8.0
    max_ongoing_requests: int = 32
    replica_cpus: float = 1.0
    replica_gpus: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.min_replicas <= self.max_replicas:
            raise ValueError(f"need 0 < min_replicas <= max_replicas, got {self.min_replicas}, {self.max_replicas}")
        if self.target_ongoing_requests <= 0 or self.max_ongoing_requests < self.target_ongoing_requests:
            raise ValueError("need 0 < target_ongoing_requests <= max_ongoing_requests")

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> ServeScaling:
        """The scaling named in a Serve config's `args` (unknown keys are an error)."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(args) - known - {"db_uri", "models_file"})
        if unknown:
            raise ValueError(f"unknown Serve args {unknown}; known: {sorted(known | {'db_uri', 'models_file'})}")
        return cls(**{key: value for key, value in args.items() if key in known})


class SearchReplica:
    """One Serve replica: the service's app, built on the replica from settings made at the edge."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings

    def __serve_build_asgi_app__(self):
        """The ASGI app this replica serves (Serve calls this once, after __init__)."""
        from fashion_search_pipeline.service.app import create_app

        return create_app(self.settings)


def search_application(settings: ServiceSettings, scaling: ServeScaling = ServeScaling()):
    """The Serve application (a bound deployment) over `settings`."""
    from ray import serve

    deployment = serve.deployment(
        name=DEPLOYMENT_NAME,
        autoscaling_config={
            "min_replicas": scaling.min_replicas,
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests,
        },
        max_ongoing_requests=scaling.max_ongoing_requests,
        ray_actor_options={"num_cpus": scaling.replica_cpus, "num_gpus": scaling.replica_gpus},
    )(serve.ingress()(SearchReplica))
    return deployment.bind(settings)


def build_app(args: dict[str, Any]):
    """Serve config entry point (deploy/serve.yaml): settings from the environment, args override."""
    import os

    from fashion_search_pipeline.service.settings import ServiceSettings

    settings = ServiceSettings.from_environment(
        os.environ, db_uri=args.get("db_uri"), models_file=args.get("models_file")
    )
    return search_application(settings, ServeScaling.from_args(args))


def run_search_service(
    settings: ServiceSettings, scaling: ServeScaling, *, address: str | None, host: str, port: int
) -> None:
    """Join the cluster at `address` (see ray_engine.connect), start Serve's HTTP proxy on
    host:port and deploy the search application; returns once it is running (Serve keeps it)."""
    from ray import serve

    connect(address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(search_application(settings, scaling), name=APP_NAME, route_prefix="/", blocking=False)
