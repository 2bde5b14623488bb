"""Probe: caption columns named like LanceDB's result columns, and non-ASCII headers.

Before: a `_distance` column made every search on that model fail (duplicate column), two
Chinese headers both became `__` and failed the drop, and `Größe` became `gr__e`.
"""

from __future__ import annotations

import csv
import io

from fashion_search_pipeline.defs.materialize import GraphRunner
from fashion_search_pipeline.demo_catalog import demo_items, write_drop
from fashion_search_pipeline.search import CatalogSearch
from fashion_search_pipeline_tests.defs import conftest as graph

EXTRA_HEADERS = ("_distance", "_score", "_relevance_score", "_rowid", "Größe", "颜色", "尺码")

instance = graph.instance  # the graph tests' fixture
tiny_registry = graph.tiny_registry  # the graph tests' fixture
TINY_MODEL = graph.TINY_MODEL
make_defs = graph.make_defs


def _with_extra_columns(captions: str) -> str:
    """The drop's captions.csv with the extra headers, each row filled with values derived from its id."""
    rows = list(csv.reader(io.StringIO(captions), delimiter="#"))
    out = io.StringIO()
    writer = csv.writer(out, delimiter="#", lineterminator="\n")
    writer.writerow(rows[0] + list(EXTRA_HEADERS))
    for row in rows[1:]:
        writer.writerow(row + [f"{header}:{row[0]}" for header in EXTRA_HEADERS])
    return out.getvalue()


def test_reserved_and_non_ascii_headers_are_kept_and_every_search_works(tmp_path, tiny_registry, instance):
    landing = tmp_path / "landing"
    folder = write_drop(landing / "drops" / "d1", demo_items(variants=1))
    captions = folder / "captions.csv"
    captions.write_text(_with_extra_columns(captions.read_text(encoding="utf-8")), encoding="utf-8")
    runner = GraphRunner(make_defs(landing, tmp_path, tiny_registry), instance, log=lambda _: None)
    runner.drops(["d1"])
    assert runner.catalog()
    runner.embeddings([TINY_MODEL])
    assert runner.ok, runner.failures

    search = CatalogSearch(str(tmp_path / "lancedb"), registry=tiny_registry)
    for fusion in ("weighted", "rrf", "image", "text"):
        found = search.text("red dress", model=TINY_MODEL, k=10, fusion=fusion)
        assert found.height == 10, fusion
    renamed = {"attr__distance", "attr__score", "attr__relevance_score", "attr__rowid", "größe", "颜色", "尺码"}
    assert renamed <= set(found.columns)
    row = found.row(0, named=True)
    assert row["größe"] == f"Größe:{row['item_id']}" and row["attr__distance"] == f"_distance:{row['item_id']}"
    filtered = search.text("red dress", model=TINY_MODEL, k=5, where="`颜色` IS NOT NULL")
    assert filtered.height == 5 and filtered["颜色"].str.starts_with("颜色:").all()
