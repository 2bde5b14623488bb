"""The analyst snippet of docs/notebooks.md (plain lancedb + polars) runs as written against a data folder the pipeline filled."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from fashion_search_pipeline.demo_catalog import ARTICLES, demo_items, write_drop
from fashion_search_pipeline_tests.data_folder import materialize_data_folder, use_data_folder, write_tiny_registry

NOTEBOOKS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "notebooks.md"
SNIPPET = re.compile(r"<!-- analyst-snippet -->\s*```python\n(.*?)```", re.DOTALL)
# The snippet opens the demo's domain-clip table by name; here a tiny random-weight model plays that part.
MODEL = "domain-clip"


def test_analyst_snippet_runs_as_written(tmp_path, monkeypatch):
    found = SNIPPET.findall(NOTEBOOKS_PAGE.read_text(encoding="utf-8"))
    assert len(found) == 1, "docs/notebooks.md must hold exactly one python block after <!-- analyst-snippet -->"
    home = tmp_path / "data"
    use_data_folder(monkeypatch, home)
    write_drop(home / "landing" / "drops" / "d1", demo_items(variants=1))
    write_tiny_registry(home, MODEL)
    materialize_data_folder(home, ["d1"], MODEL)
    monkeypatch.chdir(tmp_path)  # the snippet opens data/lancedb, as from the repository after `make demo`

    printed = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(found[0], "docs/notebooks.md (analyst snippet)", "exec"), namespace)

    assert f"{MODEL}__image" in printed.getvalue()
    assert "vector: fixed_size_list<item: float>[32]" in printed.getvalue()
    assert sorted(namespace["red"]["item_id"]) == sorted(f"{article.lower()}-red-1" for article in ARTICLES)
    similar = namespace["similar"]
    assert similar["item_id"][0] == "dress-red-1"
    assert similar.height == 5 and set(similar["gender"]) == {"Women"}
    assert similar["_distance"].is_sorted()
