"""Materialize the asset graph for catalog drops in-process, on a real Dagster instance.

The CLI and the integration tests use this; in the UI the same runs start from the asset graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dagster import DagsterInstance, Definitions, MultiPartitionKey, materialize

from fashion_search_pipeline.catalog.drops import validate_drop_id
from fashion_search_pipeline.columns import MODALITIES
from fashion_search_pipeline.defs.catalog_assets import DROP_ASSETS
from fashion_search_pipeline.defs.partitions import catalog_drops



@dataclass
class GraphRun:
    """The outcome of materializing drops, the catalog and the embeddings."""

    run_ids: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every run succeeded."""
        return not self.failures


def register_drops(instance: DagsterInstance, drop_ids: Iterable[str]) -> list[str]:
    """Add the drops that are new to the `catalog_drops` partitions; returns the new ones."""
    wanted = [validate_drop_id(d) for d in drop_ids]
    known = set(instance.get_dynamic_partitions(catalog_drops.name))
    new = [d for d in wanted if d not in known]
    if new:
        instance.add_dynamic_partitions(catalog_drops.name, new)
    return new


def _run(defs: Definitions, instance: DagsterInstance, selection, partition_key, outcome: GraphRun, what: str):
    result = materialize(
        list(defs.assets),
        instance=instance,
        resources=defs.resources,
        selection=list(selection),
        partition_key=partition_key,
        raise_on_error=False,
    )
    outcome.run_ids.append(result.run_id)
    if not result.success:
        outcome.failures.append(f"{what} (run {result.run_id})")
    return result


def materialize_graph(
    defs: Definitions,
    instance: DagsterInstance,
    drop_ids: Iterable[str],
    model_names: Iterable[str],
    *,
    log: Callable[[str], None] = print,
) -> GraphRun:
    """Register and materialize `drop_ids`, then catalog_items, then embeddings for every model x modality.

    A failing drop does not stop the others; the catalog is built from the drops that succeeded.
    """
    outcome = GraphRun()
    drops = sorted(drop_ids)
    register_drops(instance, drops)
    for drop_id in drops:
        log(f"materializing drop {drop_id}")
        _run(defs, instance, DROP_ASSETS, drop_id, outcome, f"drop {drop_id}")
    log("materializing catalog_items")
    if not _run(defs, instance, ["catalog_items"], None, outcome, "catalog_items").success:
        return outcome
    for model in sorted(model_names):
        for modality in MODALITIES:
            log(f"materializing embeddings {model}|{modality}")
            key = MultiPartitionKey({"model": model, "modality": modality})
            _run(defs, instance, ["embeddings"], key, outcome, f"embeddings {model}|{modality}")
    return outcome
