"""retrieval_evaluation and its checks on tables built through the real graph with a tiny random-weight model,
its figures checked against CatalogSearch and a brute-force computation; and `fashion-search evaluate`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from dagster import AssetKey, AssetSelection, instance_for_test, materialize
from lancedb.index import IvfPq

from fashion_search_pipeline import cli, config
from fashion_search_pipeline.defs.checks import ANN_MIN_RECALL, ann_index_recall
from fashion_search_pipeline.defs.evaluation_assets import RetrievalEvaluationConfig, materialize_evaluation
from fashion_search_pipeline.defs.materialize import materialize_graph
from fashion_search_pipeline.defs.resources import CatalogStorage
from fashion_search_pipeline.demo_catalog import demo_items, write_drop
from fashion_search_pipeline.models.checkpoints import TINY_CONFIG
from fashion_search_pipeline.models.published import training_cards
from fashion_search_pipeline.models.registry import ModelSpec
from fashion_search_pipeline.search import CatalogSearch
from fashion_search_pipeline.store.fusion import STRATEGIES
from fashion_search_pipeline.store.fusion_choices import read_fusion_choices
from fashion_search_pipeline.store.tables import connect, embedding_schema, table_name, upsert_rows
from fashion_search_pipeline_tests.defs.conftest import TINY_MODEL, make_defs

DROP = "d1"


@pytest.fixture(scope="module")
def graph(tmp_path_factory, tiny_registry):
    """84 demo items through the whole graph, then one evaluation; yields what the tests need."""
    root = tmp_path_factory.mktemp("evaluation")
    landing = root / "landing"
    write_drop(landing / "drops" / DROP, demo_items(variants=2))
    defs = make_defs(landing, root, tiny_registry)
    with instance_for_test() as instance:
        outcome = materialize_graph(defs, instance, [DROP], [TINY_MODEL], log=lambda _: None, console_log_level="ERROR")
        assert outcome.ok, outcome.failures
        reports = root / "reports"
        result = materialize_evaluation(defs, instance, RetrievalEvaluationConfig(reports_dir=str(reports)))
        yield {
            "root": root, "landing": landing, "defs": defs, "instance": instance, "result": result,
            "reports": reports, "graph_checks": outcome.checks,
        }


def latest_metadata(instance) -> dict:
    event = instance.get_latest_materialization_event(AssetKey("retrieval_evaluation"))
    return {key: value.value for key, value in event.asset_materialization.metadata.items()}


def metric_row(metadata: dict, task: str, strategy: str | None = None) -> dict:
    return next(r for r in metadata["metrics"] if (r["task"], r["strategy"]) == (task, strategy))


def test_evaluation_reports_metrics_plots_and_a_recommendation(graph):
    assert graph["result"].success
    checks = {c.check_name: c for c in graph["result"].get_asset_check_evaluations()}
    assert checks["metrics_not_regressed"].passed
    ann = graph["graph_checks"]["ann_index_recall"]  # one per embeddings partition run
    assert len(ann) == 2 and all(c.passed for c in ann)
    assert all(c.metadata["min_recall"].value == 1.0 for c in ann)  # small tables: exact scan
    for name in ("tables_match_catalog", "index_coverage", "models_available", "catalog_item_ids_unique", "drop_reject_rate"):
        assert all(c.passed for c in graph["graph_checks"][name]), name

    metadata = latest_metadata(graph["instance"])
    assert metadata["best_model"] == TINY_MODEL and metadata["best_fusion"] in STRATEGIES
    assert metadata["summary"].startswith("# Retrieval evaluation: catalog\n\n**Recommendation:** Use model `tiny`")
    assert metadata["recall_at_k"].startswith("![recall@k](data:image/")
    assert metadata["examples"].startswith("![example queries](data:image/")  # jpeg when the png is large
    folder = graph["reports"]
    assert {p.name for p in folder.iterdir()} == {
        "summary.md", "metrics.json", "recall_at_k.png", "examples.png", "per_query_ranks.parquet"
    }
    ranks = metadata["per_query_ranks"]  # relative to the data folder, as every path in metadata
    assert not Path(ranks).is_absolute() and (folder / "per_query_ranks.parquet").as_posix().endswith(f"/{ranks}")
    for row in metadata["metrics"]:
        assert all(not (isinstance(v, float) and np.isnan(v)) for v in row.values())


def test_figures_agree_with_a_brute_force_computation_on_the_tables(graph):
    metadata = latest_metadata(graph["instance"])
    db = connect(str(graph["root"] / "lancedb"))
    text = db.open_table(table_name(TINY_MODEL, "text")).to_polars().collect().sort("item_id")
    image = db.open_table(table_name(TINY_MODEL, "image")).to_polars().collect().sort("item_id")
    t = np.stack(text["vector"].to_list()).astype(np.float64)
    v = np.stack(image["vector"].to_list()).astype(np.float64)
    scores = (t / np.linalg.norm(t, axis=1, keepdims=True)) @ (v / np.linalg.norm(v, axis=1, keepdims=True)).T
    descriptions = [" ".join(d.lower().split()) for d in text["description"].to_list()]
    first_ranks = []
    for i, row in enumerate(scores):
        relevant = [j for j, d in enumerate(descriptions) if d == descriptions[i]]
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        first_ranks.append(min(order.index(j) + 1 for j in relevant))
    expected = metric_row(metadata, "text_to_image")
    assert expected["queries"] == len(first_ranks)
    assert expected["mrr"] == pytest.approx(np.mean([1 / r for r in first_ranks]))
    assert metadata["mrr/tiny/text_to_image"] == pytest.approx(expected["mrr"])
    assert expected["median_rank"] == pytest.approx(np.median(first_ranks))


def test_fused_rankings_are_what_catalog_search_returns(graph):
    per_query = pl.read_parquet(graph["reports"] / "per_query_ranks.parquet").filter(pl.col("task") == "text_search")
    assert per_query.height == len(STRATEGIES) * per_query["query"].n_unique()
    sample = per_query["query"].unique(maintain_order=True).gather_every(4)
    per_query = per_query.filter(pl.col("query").is_in(sample.to_list()))
    with CatalogSearch(str(graph["root"] / "lancedb"), registry=graph["defs"].resources["models"].specs()) as search:
        for query, strategy, top in per_query.select("query", "strategy", "top").iter_rows():
            hits = search.text(query, model=TINY_MODEL, k=10, fusion=strategy)
            assert hits["item_id"].to_list() == top, (query, strategy)


def test_catalog_search_follows_the_fusion_the_evaluation_chose(graph):
    metadata = latest_metadata(graph["instance"])
    db_uri = str(graph["root"] / "lancedb")
    assert read_fusion_choices(connect(db_uri)) == {TINY_MODEL: metadata["best_fusion"]}
    assert f"| {TINY_MODEL} | {metadata['best_fusion']} |" in metadata["fusion_choices"]
    registry = graph["defs"].resources["models"].specs()
    with CatalogSearch(db_uri, registry=registry) as search:
        assert search.fusion_for(TINY_MODEL) == metadata["best_fusion"]
        chosen = search.text("Women Red Dress", model=TINY_MODEL, k=5)
        named = search.text("Women Red Dress", model=TINY_MODEL, k=5, fusion=metadata["best_fusion"])
        assert chosen.equals(named)
    with CatalogSearch(db_uri, registry=registry, fusion="text") as search:
        assert search.fusion_for(TINY_MODEL) == "text"  # a fusion given by the caller wins


def shuffled_rows(db, name: str, seed: int) -> pa.Table:
    """The table's rows with the vectors handed to other items (a model that learned nothing)."""
    rows = db.open_table(name).to_arrow()
    order = np.random.default_rng(seed).permutation(rows.num_rows)
    vectors = rows.column("vector").take(pa.array(order))
    return rows.set_column(rows.schema.get_field_index("vector"), "vector", vectors)


def test_a_metric_drop_against_the_previous_evaluation_is_a_warning(graph):
    db = connect(str(graph["root"] / "lancedb"))
    originals = {m: db.open_table(table_name(TINY_MODEL, m)).to_arrow() for m in ("image", "text")}
    try:
        for seed, modality in enumerate(("image", "text")):
            upsert_rows(db, table_name(TINY_MODEL, modality), shuffled_rows(db, table_name(TINY_MODEL, modality), seed))
        result = materialize_evaluation(
            graph["defs"], graph["instance"], RetrievalEvaluationConfig(reports_dir=str(graph["root"] / "worse"))
        )
    finally:
        for modality, rows in originals.items():
            upsert_rows(db, table_name(TINY_MODEL, modality), rows)
    assert result.success  # a warning, not a crash
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "metrics_not_regressed")
    assert not check.passed
    assert check.severity.value == "WARN"
    assert check.metadata["drops"].value > 0
    assert "->" in check.metadata["dropped_metrics"].value


def test_captions_of_unknown_items_are_skipped_and_counted(graph, tmp_path):
    items = demo_items(variants=2)
    captions = tmp_path / "shoppers.csv"
    with open(captions, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        for item in items[:3]:
            writer.writerow([f"images/{item.item_id}.jpg", f"{item.colour} {item.article_type}".lower()])
        writer.writerow(["images/unknown-1.jpg", "a thing we never sold"])
        writer.writerow(["images/unknown-2.jpg", "another one"])
    config_ = RetrievalEvaluationConfig(captions_files=[str(captions)], reports_dir=str(tmp_path / "reports"))
    result = materialize_evaluation(graph["defs"], graph["instance"], config_)
    assert result.success
    metadata = latest_metadata(graph["instance"])
    row = metric_row(metadata, "captions:shoppers.csv", "rrf")
    assert (row["queries"], row["skipped"]) == (3, 2)
    assert "shoppers.csv: 2 captions skipped {'unknown_item': 2}, 3 evaluated" in metadata["summary"]


def test_the_ann_check_fails_when_the_index_misses_neighbours(graph, tmp_path, tiny_registry):
    db = connect(str(tmp_path / "lancedb"))
    vectors = np.random.default_rng(1).normal(size=(1000, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    columns = {
        c: [f"{c}-{i}" for i in range(1000)]
        for c in ("item_id", "drop_id", "image_uri", "description", "content_hash", "model", "model_version", "attributes")
    }
    columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 128)
    name = table_name(TINY_MODEL, "image")
    upsert_rows(db, name, pa.table(columns, schema=embedding_schema(128, [])))
    db.open_table(name).create_index("vector", config=IvfPq(distance_type="cosine", num_partitions=400, num_sub_vectors=8))
    storage = CatalogStorage(landing_uri=str(graph["landing"]), db_uri=str(tmp_path / "lancedb"))
    defs = make_defs(graph["landing"], tmp_path, tiny_registry, storage=storage)
    with instance_for_test() as instance:
        result = materialize(
            [*defs.assets, *defs.asset_checks],
            instance=instance,
            resources=defs.resources,
            selection=AssetSelection.checks(ann_index_recall),
            raise_on_error=False,
        )
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed
    assert check.severity.value == "ERROR"
    assert check.metadata["min_recall"].value < ANN_MIN_RECALL
    assert name in check.description


def test_an_empty_catalog_materializes_with_a_clear_message(tmp_path, tiny_registry):
    landing = tmp_path / "landing"
    drop = landing / "drops" / "empty"
    drop.mkdir(parents=True)
    (drop / "captions.csv").write_text("image_path#description\nimages/gone.jpg#A shirt\n", encoding="utf-8")
    defs = make_defs(landing, tmp_path, tiny_registry)
    with instance_for_test() as instance:
        assert materialize_graph(defs, instance, ["empty"], [TINY_MODEL], log=lambda _: None).ok
        result = materialize_evaluation(defs, instance, RetrievalEvaluationConfig(reports_dir=str(tmp_path / "r")))
        assert result.success
        metadata = latest_metadata(instance)
    assert metadata["summary"].startswith("# Retrieval evaluation: catalog\n\n**Nothing was evaluated.** model 'tiny'")
    assert metadata["recommendation"] == "nothing was evaluated"
    assert metadata["metrics"] == []


def test_the_evaluate_command_runs_a_catalog_and_a_captions_folder(graph, tmp_path, tiny_registry, monkeypatch, capsys):
    for name in (config.HOME_ENV, config.LANDING_ENV, config.DB_ENV, config.ASSETS_ENV, "DAGSTER_HOME"):
        monkeypatch.setenv(name, str(tmp_path / "unused"))  # restored after the test; the command sets its own
    captioned = tmp_path / "captioned"
    (captioned / "images").mkdir(parents=True)
    source = graph["landing"] / "drops" / DROP / "images"
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["image", "caption"])
    for item in demo_items(variants=1)[:6]:
        (captioned / "images" / f"{item.item_id}.jpg").write_bytes((source / f"{item.item_id}.jpg").read_bytes())
        writer.writerow([f"{item.item_id}.jpg", item.description])
        writer.writerow([f"{item.item_id}.jpg", f"a {item.colour} thing"])
    (captioned / "captions.csv").write_text(text.getvalue(), encoding="utf-8")

    status = cli.main(
        ["evaluate", "--catalog", str(graph["landing"]), "--captions-dataset", str(captioned),
         "--home", str(tmp_path / "home"), "--models", tiny_registry]
    )

    out = capsys.readouterr().out
    assert status == 0
    assert "# Retrieval evaluation: catalog" in out and "**Recommendation:** Use model `tiny`" in out
    assert "check metrics_not_regressed: passed" in out  # ann_index_recall runs with the embeddings
    assert "# Retrieval evaluation: captioned" in out and "**Recommendation:** Best model: `tiny`" in out
    assert (tmp_path / "home" / "reports" / "retrieval_evaluation" / "summary.md").exists()
    assert (tmp_path / "home" / "reports" / "captioned" / "per_query_ranks.parquet").exists()


def test_the_evaluate_command_skips_missing_data_and_says_so(tmp_path, tiny_registry, monkeypatch, capsys):
    for name in (config.HOME_ENV, config.LANDING_ENV, config.DB_ENV, config.ASSETS_ENV, "DAGSTER_HOME"):
        monkeypatch.setenv(name, str(tmp_path / "unused"))
    status = cli.main(
        ["evaluate", "--catalog", str(tmp_path / "no-catalog"), "--captions-dataset", str(tmp_path / "no-flickr"),
         "--home", str(tmp_path / "home"), "--models", tiny_registry]
    )
    out = capsys.readouterr().out
    assert status == 1
    assert f"fashion catalog not found at {tmp_path / 'no-catalog'}" in out
    assert f"captioned image set not found at {tmp_path / 'no-flickr'}" in out


def test_the_evaluation_reads_the_split_from_the_card_beside_a_trained_checkpoint(tmp_path, tiny_checkpoint):
    trained = tmp_path / "domain-clip" / "current"
    trained.mkdir(parents=True)
    (trained / "model.pt").write_bytes(tiny_checkpoint.read_bytes())
    card = {"version": "v1", "items": {"holdout_fraction": 0.1}}
    (trained / "card.json").write_text(json.dumps(card))
    specs = {
        "domain-clip": ModelSpec("domain-clip", str(TINY_CONFIG), str(trained / "model.pt")),
        "no-card": ModelSpec("no-card", str(TINY_CONFIG), str(tiny_checkpoint)),
        "hub": ModelSpec("hub", "ViT-B-32", "openai"),
    }
    assert training_cards(specs) == {"domain-clip": card}
