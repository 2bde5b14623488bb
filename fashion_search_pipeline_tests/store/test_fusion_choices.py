"""Recorded fusion choices: a real LanceDB table, replaced by each evaluation, read back by CatalogSearch."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from fashion_search_pipeline.models.registry import ModelSpec
from fashion_search_pipeline.search import CatalogSearch
from fashion_search_pipeline.store.fusion import DEFAULT_STRATEGY
from fashion_search_pipeline.store.fusion_choices import (
    SCHEMA,
    TABLE,
    FusionChoice,
    read_fusion_choices,
    record_fusion_choices,
)
from fashion_search_pipeline.store.tables import connect


def test_nothing_recorded_reads_as_empty(tmp_path):
    assert read_fusion_choices(connect(str(tmp_path / "db"))) == {}


def test_each_evaluation_replaces_the_previous_choices(tmp_path):
    db = connect(str(tmp_path / "db"))
    record_fusion_choices(db, {"a": FusionChoice("raw", 0.7, ("text_search",)), "b": FusionChoice("rrf", 0.5, ())})
    assert read_fusion_choices(db) == {"a": "raw", "b": "rrf"}
    record_fusion_choices(db, {"a": FusionChoice("text", 0.8, ("text_search", "image_search"))})
    assert read_fusion_choices(db) == {"a": "text"}
    row = db.open_table(TABLE).to_arrow().to_pylist()[0]
    assert (row["mean_mrr"], row["tasks"]) == (0.8, "text_search,image_search")


def test_an_unknown_strategy_is_refused_on_write_and_skipped_on_read(tmp_path):
    db = connect(str(tmp_path / "db"))
    with pytest.raises(ValueError, match="unknown fusion strategies {'a': 'best'}"):
        record_fusion_choices(db, {"a": FusionChoice("best", 0.9, ())})
    now = datetime.now(UTC)
    rows = [
        {"model": "a", "fusion": "from-a-newer-version", "mean_mrr": 0.9, "tasks": "", "evaluated_at": now},
        {"model": "b", "fusion": "image", "mean_mrr": 0.4, "tasks": "", "evaluated_at": now},
    ]
    db.create_table(TABLE, data=pa.Table.from_pylist(rows, schema=SCHEMA))
    assert read_fusion_choices(db) == {"b": "image"}


def test_catalog_search_uses_the_recorded_choice_else_the_default(tmp_path):
    db_uri = str(tmp_path / "db")
    registry = {name: ModelSpec(name, "ViT-B-32", "openai") for name in ("chosen", "other")}
    assert CatalogSearch(db_uri, registry=registry).fusion_for("chosen") == DEFAULT_STRATEGY
    record_fusion_choices(connect(db_uri), {"chosen": FusionChoice("rrf", 0.6, ("text_search",))})
    search = CatalogSearch(db_uri, registry=registry)
    assert (search.fusion_for("chosen"), search.fusion_for("other")) == ("rrf", DEFAULT_STRATEGY)
    assert CatalogSearch(db_uri, registry=registry, fusion="image").fusion_for("chosen") == "image"
