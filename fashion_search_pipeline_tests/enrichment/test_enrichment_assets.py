"""product_clusters, product_tags and the caption-image mismatch check, materialized through the real
graph (demo drops, a tiny random-weight model, LanceDB tables); and a new drop found by keyword."""

from __future__ import annotations

import polars as pl
import pytest
from dagster import AssetSelection, instance_for_test, materialize

from fashion_search_pipeline.defs.enrichment_assets import caption_image_mismatch
from fashion_search_pipeline.defs.materialize import materialize_graph
from fashion_search_pipeline.demo_catalog import DemoItem, demo_items, write_drop
from fashion_search_pipeline.search import CatalogSearch
from fashion_search_pipeline.store.clusters import CLUSTER_ID, CLUSTER_SIZE, VARIANTS
from fashion_search_pipeline.store.tables import connect, table_name
from fashion_search_pipeline_tests.defs.conftest import TINY_MODEL, make_defs


@pytest.fixture(scope="module")
def graph(tmp_path_factory, tiny_registry):
    root = tmp_path_factory.mktemp("enrichment")
    landing = root / "landing"
    write_drop(landing / "drops" / "d1", demo_items(variants=2))
    defs = make_defs(landing, root, tiny_registry)
    with instance_for_test() as instance:
        assert materialize_graph(defs, instance, ["d1"], [TINY_MODEL], log=lambda _: None, console_log_level="ERROR").ok
        result = materialize(
            [*defs.assets, *defs.asset_checks],
            instance=instance,
            resources=defs.resources,
            selection=AssetSelection.assets("product_clusters", "product_tags")
            | AssetSelection.checks(caption_image_mismatch),
            raise_on_error=False,
        )
        yield {"root": root, "landing": landing, "defs": defs, "instance": instance, "result": result,
               "db_uri": defs.resources["storage"].db_uri, "registry": tiny_registry}


def table(graph, modality: str) -> pl.DataFrame:
    return pl.from_arrow(connect(graph["db_uri"]).open_table(table_name(TINY_MODEL, modality)).to_arrow())


def test_clusters_and_tags_are_columns_of_every_table(graph):
    assert graph["result"].success
    for modality in ("image", "text"):
        rows = table(graph, modality)
        assert rows[CLUSTER_ID].null_count() == 0
        sizes = rows.group_by(CLUSTER_ID).agg(pl.len(), pl.col(CLUSTER_SIZE).first())
        assert (sizes["len"] == sizes[CLUSTER_SIZE]).all()
        assert {"pattern", "pattern_confidence", "sleeve", "predicted_type"} <= set(rows.columns)
        assert rows["pattern"].null_count() == 0


def test_the_materializations_report_clusters_facets_and_a_thumbnail_sample(graph):
    clusters = graph["result"].asset_materializations_for_node("product_clusters")[0].metadata
    assert clusters["items"].value == 84
    assert clusters["largest_clusters"].value.startswith("![largest clusters](data:image/")
    assert [row["threshold"] for row in clusters["threshold_sweep"].value]
    tags = graph["result"].asset_materializations_for_node("product_tags")[0].metadata
    assert "| predicted_type | article_type | all 84 items |" in tags[f"{TINY_MODEL}/facets"].value


def test_the_caption_check_warns_with_the_mismatched_items(graph):
    (check,) = graph["result"].get_asset_check_evaluations()
    assert check.severity.value == "WARN"
    assert check.metadata["items"].value == 84
    assert check.passed == (check.metadata["mismatched"].value == 0)


def test_search_filters_by_a_zero_shot_facet_and_collapses_clusters(graph):
    with CatalogSearch(graph["db_uri"], registry=graph["registry"]) as search:
        label = table(graph, "text")["pattern"][0]
        filtered = search.text("shirt", k=100, where=f"pattern = '{label}'")
        assert filtered.height and set(filtered["pattern"]) == {label}
        collapsed = search.text("shirt", k=100, collapse=True)
        assert collapsed[CLUSTER_ID].n_unique() == collapsed.height
        assert (collapsed[VARIANTS] == collapsed[CLUSTER_SIZE] - 1).all()


def test_a_new_drops_items_are_found_by_keyword_right_after_the_embeddings_run(graph):
    new = DemoItem("parka-zzz-1", "Quokkawear Women Yellow Parka", "Women", "Dress", "Yellow")
    write_drop(graph["landing"] / "drops" / "d2", [new])
    outcome = materialize_graph(graph["defs"], graph["instance"], ["d2"], [TINY_MODEL], log=lambda _: None,
                                console_log_level="ERROR")
    assert outcome.ok
    with CatalogSearch(graph["db_uri"], registry=graph["registry"]) as search:
        assert search.text("quokkawear parka", fusion="keyword")["item_id"].to_list() == ["parka-zzz-1"]
        assert search.text("quokkawear parka", fusion="hybrid")["item_id"][0] == "parka-zzz-1"
    indexes = connect(graph["db_uri"]).open_table(table_name(TINY_MODEL, "text")).list_indices()
    assert not [index.name for index in indexes if index.num_unindexed_rows]
