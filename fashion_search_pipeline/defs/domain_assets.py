"""The `domain_clip` asset: a CLIP trained on the catalog itself, registered as model `domain-clip`."""

from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from fashion_search_pipeline.defs.metadata import relative_to_home
from fashion_search_pipeline.defs.resources import CatalogStorage, ModelRegistry
from fashion_search_pipeline.domain_training import DEFAULT_PUBLISH_MARGIN, train_domain_model
from fashion_search_pipeline.models.published import card_markdown
from fashion_search_pipeline.models.registry import DOMAIN_MODEL
from fashion_search_pipeline.models.training import TrainingConfig

_DEFAULTS = TrainingConfig()


class DomainClipConfig(Config):
    """Hyperparameters of a domain-clip training run (defaults: the small model from scratch, on CPU)."""

    base_model: str = Field(
        default="", description="registry model to fine-tune; empty trains the small packaged model from scratch"
    )
    epochs: int = _DEFAULTS.epochs
    batch_size: int = _DEFAULTS.batch_size
    learning_rate: float = _DEFAULTS.learning_rate
    weight_decay: float = _DEFAULTS.weight_decay
    freeze: str = Field(default=_DEFAULTS.freeze, description="none | image | text: the tower kept frozen")
    augment_text_from_attributes: bool = _DEFAULTS.augment_text_from_attributes
    max_train_seconds: float = Field(default=_DEFAULTS.max_train_seconds or 0.0, description="0: no time budget")
    holdout_fraction: float = 0.1
    seed: int = _DEFAULTS.seed
    publish_margin: float = Field(
        default=DEFAULT_PUBLISH_MARGIN, description="held-out MRR a new version may lose against the registered one"
    )
    force: bool = Field(default=False, description="publish even when the held-out MRR gate refuses the new version")

    def training_config(self) -> TrainingConfig:
        """The pure TrainingConfig these settings describe."""
        return TrainingConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            freeze=self.freeze,
            augment_text_from_attributes=self.augment_text_from_attributes,
            max_train_seconds=self.max_train_seconds or None,
            seed=self.seed,
        )


@asset(group_name="models", kinds={"pytorch"}, owners=["team:search"], tags={"stage": "train"})
def domain_clip(
    context: AssetExecutionContext,
    config: DomainClipConfig,
    catalog_items: pl.DataFrame,
    storage: CatalogStorage,
    models: ModelRegistry,
) -> MaterializeResult:
    """A CLIP trained contrastively on the catalog's (image, description) pairs, held-out split by item.

    Published to `models/domain-clip` in the data folder (versioned by content, with a model card) and
    registered as model `domain-clip`: its embeddings are redone with the new version.
    """
    base = models.specs()[config.base_model] if config.base_model else None
    result = train_domain_model(
        catalog_items,
        storage.read_bytes,
        config.training_config(),
        base=base,
        holdout_fraction=config.holdout_fraction,
        log=context.log.info,
        publish_margin=config.publish_margin,
        force=config.force,
        models_root=Path(models.models_root),
    )
    held_out = result.card["held_out"]
    if result.published is None:
        raise Failure(description=result.gate, metadata={"heldout_text_to_image_mrr": held_out["text_to_image_mrr"]})
    return MaterializeResult(
        metadata={
            "model": DOMAIN_MODEL,
            "version": result.published.version,
            "checkpoint": MetadataValue.path(relative_to_home(result.published.checkpoint, storage.home)),
            "heldout_text_to_image_mrr": held_out["text_to_image_mrr"],
            "random_mrr": held_out["random_mrr"],
            "untrained_mrr": held_out["untrained_mrr"],
            "mrr_over_random": held_out["mrr_over_random"],
            "publish_gate": result.gate,
            "training_seconds": result.card["training"]["wall_seconds"],
            "samples_per_second": result.card["training"]["samples_per_second"],
            "model_card": MetadataValue.md(card_markdown(result.card)),
        }
    )
