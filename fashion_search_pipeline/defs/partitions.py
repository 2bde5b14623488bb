"""Partitions: catalog assets by drop, embeddings by model x modality."""

from collections.abc import Iterable

from dagster import DynamicPartitionsDefinition, MultiPartitionsDefinition, StaticPartitionsDefinition

from fashion_search_pipeline.columns import MODALITIES

catalog_drops = DynamicPartitionsDefinition(name="catalog_drops")


def embedding_partitions(model_names: Iterable[str]) -> MultiPartitionsDefinition:
    """One partition per registered model and modality (image, text)."""
    return MultiPartitionsDefinition(
        {
            "model": StaticPartitionsDefinition(sorted(model_names)),
            "modality": StaticPartitionsDefinition(list(MODALITIES)),
        }
    )
