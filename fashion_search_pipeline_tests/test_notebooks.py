"""The analytics notebook runs top to bottom, headless, against a data folder the pipeline filled."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from fashion_search_pipeline.demo_catalog import demo_items, write_drop
from fashion_search_pipeline_tests.data_folder import materialize_data_folder, use_data_folder, write_tiny_registry

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "catalog_search.ipynb"
ITEMS = demo_items(variants=1)[:14]
MODEL = "tiny"


def _execute() -> dict[str, list[dict]]:
    """Run every cell in a fresh kernel started in notebooks/; returns the outputs by cell tag."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    resources = {"metadata": {"path": str(NOTEBOOK.parent)}}
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources=resources).execute()
    return {cell.metadata["tags"][0]: cell.outputs for cell in notebook.cells if cell.metadata.get("tags")}


def _text(outputs: list[dict]) -> str:
    parts = [output.get("text", "") for output in outputs]
    parts += [output.get("data", {}).get("text/plain", "") for output in outputs]
    return "\n".join(parts)


def _images(outputs: list[dict]) -> int:
    return sum("image/png" in output.get("data", {}) for output in outputs)


@pytest.mark.parametrize("evaluate", [True, False], ids=["with-evaluation-report", "before-evaluation"])
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch, evaluate):
    use_data_folder(monkeypatch, tmp_path)
    write_drop(tmp_path / "landing" / "drops" / "nb-001", ITEMS)
    write_tiny_registry(tmp_path, MODEL)
    materialize_data_folder(tmp_path, ["nb-001"], MODEL, evaluate=evaluate)

    outputs = _execute()

    assert f"data folder: {tmp_path}" in _text(outputs["setup"])
    assert f"{len(ITEMS)} products from 1 drops" in _text(outputs["catalog"])
    assert "article_type" in _text(outputs["attributes"])
    assert "accepted" in _text(outputs["rejects"])
    assert f"{MODEL}__image" in _text(outputs["tables"]) and f"searching with: {MODEL}" in _text(outputs["tables"])
    for tag in ("text-search", "filtered-search", "image-search"):
        assert _images(outputs[tag]) == 1, tag
    assert "Women" in _text(outputs["filtered-search"])
    first = min(item.item_id for item in ITEMS)
    assert f"query: {first}; best match: {first}" in _text(outputs["image-search"])
    if evaluate:
        assert "per_query_ranks.parquet" in _text(outputs["report"])
        assert "recall@10" in _text(outputs["comparison"]) and "text_to_image" in _text(outputs["comparison"])
        assert _images(outputs["recall-plot"]) == 1
    else:
        assert "No evaluation report" in _text(outputs["report"])
        assert _images(outputs["recall-plot"]) == 0
