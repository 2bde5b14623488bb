"""When `embeddings` partitions run by themselves: catalog changes, a retrained domain-clip, new weights.

    embeddings[model|modality] is requested when
      (catalog_items was updated, or the partition is newly missing)      every model
      or (domain_clip was re-materialized)                                 domain-clip partitions only
      and the model's weights can be found here                            see models.availability

A model whose weights are missing (offline, wrong path, not trained yet) is never launched, so a
drop leaves no failed run; its trigger stays pending, and once the weights appear (a registry file
change, a checkpoint written) the next tick runs it: a backfill of the whole catalog.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from dagster import AssetSelection, AutomationCondition, AutomationResult

from fashion_search_pipeline.models.availability import availability
from fashion_search_pipeline.models.registry import DOMAIN_MODEL, served_specs

DOMAIN_CLIP_ASSET = "domain_clip"


def _models_of(context) -> dict[str, str]:
    """The model of each candidate partition key (keys are strings such as 'text|domain-clip')."""
    partitions = context.partitions_def
    keys = context.candidate_subset.expensively_compute_partition_keys()
    return {key: partitions.get_partition_key_from_str(key).keys_by_dimension["model"] for key in keys}


class ModelWeightsAvailable(AutomationCondition):
    """True for the embeddings partitions whose model's architecture and weights can be found here.

    The registry file is read at each evaluation, so a fixed path or a new checkpoint counts at once.
    """

    def __init__(self, models_file: str | None, models_root: str, last_good_file: str | None = None):
        self.models_file = models_file
        self.models_root = models_root
        self.last_good_file = last_good_file

    @property
    def name(self) -> str:
        return "model_weights_available"

    @property
    def description(self) -> str:
        return "the partition's model can be loaded here (weights found)"

    def evaluate(self, context) -> AutomationResult:
        last_good = Path(self.last_good_file) if self.last_good_file else None
        specs = served_specs(self.models_file, models_root=Path(self.models_root), last_good=last_good)
        models = _models_of(context)
        loadable = {model for model in set(models.values()) if model in specs and availability(specs[model]).available}
        true_keys = {key for key, model in models.items() if model in loadable}
        return AutomationResult(context, context.candidate_subset.compute_intersection_with_partition_keys(true_keys))


class PartitionsOfModels(AutomationCondition):
    """True for the embeddings partitions of the named models."""

    def __init__(self, models: Iterable[str]):
        self.models = tuple(sorted(models))

    @property
    def name(self) -> str:
        return f"model_in({', '.join(self.models)})"

    @property
    def description(self) -> str:
        return f"the partition's model is {' or '.join(self.models)}"

    def evaluate(self, context) -> AutomationResult:
        true_keys = {key for key, model in _models_of(context).items() if model in self.models}
        return AutomationResult(context, context.candidate_subset.compute_intersection_with_partition_keys(true_keys))


def embeddings_automation(models_file: str | None, models_root: str, last_good_file: str | None = None) -> AutomationCondition:
    """The embeddings asset's automation condition (see the module docstring)."""
    domain_clip = AssetSelection.assets(DOMAIN_CLIP_ASSET)
    catalog_changed = AutomationCondition.eager().ignore(domain_clip).with_label("catalog changed or partition missing")
    retrained = (
        PartitionsOfModels([DOMAIN_MODEL])
        & AutomationCondition.any_deps_updated().allow(domain_clip).since_last_handled()
        & ~AutomationCondition.any_deps_in_progress()
        & ~AutomationCondition.in_progress()
    ).with_label("domain_clip retrained")
    return ((catalog_changed | retrained) & ModelWeightsAvailable(models_file, models_root, last_good_file)).with_label(
        "(catalog changed or domain_clip retrained) and model weights available"
    )
