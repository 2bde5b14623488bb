"""Materialize the asset graph in-process, on a real Dagster instance, step by step.

The CLI and the integration tests use this; in the UI the same runs start from the asset graph,
and the sensor and automation conditions start them in production.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dagster import DagsterInstance, Definitions, MultiPartitionKey, materialize

from fashion_search_pipeline.catalog.drops import validate_drop_id
from fashion_search_pipeline.columns import MODALITIES
from fashion_search_pipeline.defs.catalog_assets import DROP_ASSETS
from fashion_search_pipeline.defs.partitions import catalog_drops


def register_drops(instance: DagsterInstance, drop_ids: Iterable[str]) -> list[str]:
    """Add the drops that are new to the `catalog_drops` partitions; returns the new ones."""
    wanted = [validate_drop_id(d) for d in drop_ids]
    known = set(instance.get_dynamic_partitions(catalog_drops.name))
    new = [d for d in wanted if d not in known]
    if new:
        instance.add_dynamic_partitions(catalog_drops.name, new)
    return new


@dataclass
class GraphRunner:
    """Runs assets of `defs` on `instance`, collecting run ids and failures (a failure never stops the rest)."""

    defs: Definitions
    instance: DagsterInstance
    log: Callable[[str], None] = print
    console_log_level: str = "DEBUG"
    failures: list[str] = field(default_factory=list)
    checks: dict[str, list] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every run succeeded."""
        return not self.failures

    def run(self, what: str, selection: list[str], partition_key=None, config: dict | None = None):
        """Materialize `selection` (one partition, or unpartitioned) with the selected assets' checks;
        returns Dagster's result. Check evaluations are kept in `checks` by check name."""
        self.log(f"materializing {what}")
        run_config: dict = {"loggers": {"console": {"config": {"log_level": self.console_log_level}}}}
        if config:
            run_config["ops"] = config
        result = materialize(
            [*self.defs.assets, *self.defs.asset_checks],
            instance=self.instance,
            resources=self.defs.resources,
            selection=selection,
            partition_key=partition_key,
            raise_on_error=False,
            run_config=run_config,
        )
        if not result.success:
            self.failures.append(f"{what} (run {result.run_id})")
        for evaluation in result.get_asset_check_evaluations():
            self.checks.setdefault(evaluation.check_name, []).append(evaluation)
        return result

    def drops(self, drop_ids: Iterable[str]) -> None:
        """Register and materialize each drop's assets."""
        drops = sorted(drop_ids)
        register_drops(self.instance, drops)
        for drop_id in drops:
            self.run(f"drop {drop_id}", list(DROP_ASSETS), drop_id)

    def catalog(self) -> bool:
        """Rebuild catalog_items from the drops that exist."""
        return self.run("catalog_items", ["catalog_items"]).success

    def domain_clip(self, config: dict | None = None) -> bool:
        """Train and publish domain-clip with the given DomainClipConfig values."""
        run = self.run("domain_clip (training)", ["domain_clip"], config={"domain_clip": {"config": config or {}}})
        return run.success

    def embeddings(self, model_names: Iterable[str]) -> None:
        """Bring every model x modality table in line with the catalog."""
        for model in sorted(model_names):
            for modality in MODALITIES:
                key = MultiPartitionKey({"model": model, "modality": modality})
                self.run(f"embeddings {model}|{modality}", ["embeddings"], key)


def materialize_graph(
    defs: Definitions,
    instance: DagsterInstance,
    drop_ids: Iterable[str],
    model_names: Iterable[str],
    *,
    log: Callable[[str], None] = print,
    console_log_level: str = "DEBUG",
) -> GraphRunner:
    """Materialize `drop_ids`, then catalog_items, then embeddings for every model x modality.

    A failing drop does not stop the others; the catalog is built from the drops that succeeded.
    Every run's events go to the instance (the UI shows them); the console shows `console_log_level` and up.
    """
    runner = GraphRunner(defs, instance, log, console_log_level)
    runner.drops(drop_ids)
    if runner.catalog():
        runner.embeddings(model_names)
    return runner
