"""Reports from hand-made results: the recommendation, markdown tables, PNGs, JSON and the per-query parquet."""

from __future__ import annotations

import io
import json

import numpy as np
import polars as pl
import pytest
from PIL import Image

from fashion_search_pipeline.evaluation.metrics import compute_metrics
from fashion_search_pipeline.evaluation.recommendation import best_fusion, best_fusion_per_model, best_model
from fashion_search_pipeline.evaluation.report import markdown_image, summary_markdown, write_reports
from fashion_search_pipeline.evaluation.retrieval import RECALL_KS, TaskResult
from fashion_search_pipeline.evaluation.suite import CATALOG_KIND, Evaluation


def result(model, task, strategy, first_ranks, query_kind="text", candidate_kind="product"):
    """A TaskResult whose queries each have one relevant item at the given rank (0: no relevant item)."""
    ranks = [np.array([r]) if r else np.array([], dtype=np.int64) for r in first_ranks]
    top = [[f"item-{j}" for j in range(1, 11)] for _ in first_ranks]
    return TaskResult(
        model=model,
        task=task,
        strategy=strategy,
        query_kind=query_kind,
        candidate_kind=candidate_kind,
        metrics=compute_metrics(ranks, ks=RECALL_KS),
        queries=[f"query {i}" for i in range(len(first_ranks))],
        ranks=ranks,
        top=top,
    )


def fusion_results():
    return [
        result("a", "text_to_image", None, [1, 2], candidate_kind="image"),
        result("a", "text_search", "rrf", [1, 1]),  # 1.0
        result("a", "text_search", "raw", [2, 2]),  # 0.5
        result("a", "image_search", "rrf", [4, 4], query_kind="image"),  # 0.25
        result("a", "image_search", "raw", [1, 2], query_kind="image"),  # 0.75
        result("b", "text_search", "rrf", [1, 4]),  # 0.625
        result("b", "text_search", "weighted", [1, 1]),  # 1.0, but b has no image_search
        result("b", "text_to_image", None, [1, 1], candidate_kind="image"),
    ]


def test_best_fusion_compares_pairs_on_the_tasks_they_all_have():
    recommendation = best_fusion(fusion_results())
    # Common task: text_search only. a/rrf and b/weighted tie at 1.0: rrf is listed first in STRATEGIES.
    assert (recommendation.model, recommendation.strategy) == ("a", "rrf")
    assert recommendation.mrr == pytest.approx(1.0)
    assert recommendation.tasks == ("text_search",)
    assert recommendation.others == {"raw": pytest.approx(0.5)}


def test_best_fusion_averages_over_every_fused_task_when_all_pairs_have_them():
    results = [r for r in fusion_results() if r.model == "a"]
    recommendation = best_fusion(results)
    # The task mix weighs text_search 0.2 and image_search 0.3 (evaluation.task_mix):
    # raw (0.2 * 0.5 + 0.3 * 0.75) / 0.5 = 0.65; rrf (0.2 * 1.0 + 0.3 * 0.25) / 0.5 = 0.55.
    assert (recommendation.strategy, recommendation.mrr) == ("raw", pytest.approx(0.65))
    assert recommendation.tasks == ("text_search", "image_search")
    sentence = recommendation.sentence()
    assert "Use model `a` with fusion `raw`: weighted mean MRR 0.650 over the task mix text_search 0.40, " \
        "image_search 0.60" in sentence
    assert "CatalogSearch now fuses `a` results with `raw` by default" in sentence


def test_each_model_gets_its_own_best_fusion():
    per_model = best_fusion_per_model(fusion_results())
    assert {model: best.strategy for model, best in per_model.items()} == {"a": "rrf", "b": "weighted"}
    assert per_model["b"].mrr == pytest.approx(1.0) and per_model["b"].others == {"rrf": pytest.approx(0.625)}


def test_best_model_uses_the_one_direction_tasks():
    recommendation = best_model(fusion_results())
    assert (recommendation.model, recommendation.strategy, recommendation.mrr) == ("b", None, pytest.approx(1.0))
    assert recommendation.others == {"a": pytest.approx(0.75)}
    assert recommendation.sentence().startswith("Best model: `b`, mean MRR 1.000 over text_to_image")


def test_no_results_recommend_nothing():
    assert best_fusion([]) is None and best_model([]) is None


def evaluation_with(results, **kwargs) -> Evaluation:
    items = pl.DataFrame(
        {"item_id": [f"item-{j}" for j in range(1, 11)], "image_uri": [f"/nowhere/{j}.jpg" for j in range(1, 11)],
         "description": ["d"] * 10}
    )
    return Evaluation(
        dataset="unit",
        kind=CATALOG_KIND,
        results=results,
        items={model: items for model in {r.model for r in results}},
        label_columns=["gender", "colour"],
        **kwargs,
    )


def test_summary_has_the_recommendation_and_tables_and_never_nan():
    results = fusion_results() + [result("a", "image_to_image", None, [0, 0], "image", "image")]
    markdown = summary_markdown(evaluation_with(results), best_fusion(results))
    assert markdown.startswith("# Retrieval evaluation: unit\n\n**Recommendation:** Use model `a` with fusion `rrf`")
    assert "| **a** | **rrf** | 1.000 | 0.250 | **0.625** |" in markdown
    # image_to_image evaluated no query: its metrics print as a dash, with both queries counted as skipped.
    assert "| a | all | image → image |  | 0 | 2 | – | – | – | – | – | – |" in markdown
    assert "nan" not in markdown.lower()
    assert "relevant: the other items with the same gender, colour" in markdown


def test_reports_are_written_and_readable(tmp_path):
    evaluation = evaluation_with(fusion_results(), notes=["model c has no tables"])
    read = []

    def read_image(uri: str) -> bytes:
        read.append(uri)
        if uri.endswith("/3.jpg"):
            raise FileNotFoundError(uri)
        picture = Image.new("RGB", (40, 60), (200, 30, 30))
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG")
        return buffer.getvalue()

    files = write_reports(evaluation, tmp_path / "reports", read_image)

    assert files.summary.read_text(encoding="utf-8") == files.markdown
    assert "- model c has no tables" in files.markdown
    document = json.loads(files.metrics.read_text(encoding="utf-8"))
    assert document["recommendation"]["strategy"] == "rrf"
    assert len(document["metrics"]) == len(fusion_results())
    for png in (files.recall_plot, files.examples):
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width > 300
    assert "/nowhere/3.jpg" in read  # an unreadable image becomes a placeholder, not an error
    per_query = pl.read_parquet(files.per_query)
    assert per_query.height == sum(len(r.queries) for r in fusion_results())
    assert per_query.schema["ranks"] == pl.List(pl.Int64)
    first = per_query.filter(
        (pl.col("model") == "a") & (pl.col("task") == "image_search") & (pl.col("strategy") == "rrf")
    )
    assert first["first_rank"].to_list() == [4, 4]


def test_inline_images_are_data_uris_and_large_ones_become_jpeg():
    small = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 10)).save(small, format="PNG")
    assert markdown_image(small.getvalue(), "plot").startswith("![plot](data:image/png;base64,iVBORw0KGgo")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, size=(300, 300, 3), dtype=np.uint8))
    large = io.BytesIO()
    noise.save(large, format="PNG")
    inline = markdown_image(large.getvalue(), "grid")
    assert inline.startswith("![grid](data:image/jpeg;base64,/9j/")
    assert len(inline) < len(large.getvalue())


def test_an_empty_evaluation_says_so_clearly(tmp_path):
    evaluation = evaluation_with([], notes=["model m: its tables hold no items, nothing to evaluate"])
    files = write_reports(evaluation, tmp_path, lambda uri: b"")
    assert files.recommendation is None
    assert "**Nothing was evaluated.** model m: its tables hold no items, nothing to evaluate" in files.markdown
    assert json.loads(files.metrics.read_text())["metrics"] == []
    assert pl.read_parquet(files.per_query).height == 0
    with Image.open(files.recall_plot) as image:
        assert image.format == "PNG"
