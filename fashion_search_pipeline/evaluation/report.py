"""Evaluation reports a person reads: the recommendation, markdown tables, a recall@k plot,
example queries with their top results as thumbnails, and per-query ranks for notebooks.

Missing values (no query evaluated, no item scored) are written as "–" in markdown
and null in JSON and parquet, never NaN.
"""

from __future__ import annotations

import base64
import io
import json
import math
import textwrap
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw, ImageFont

from fashion_search_pipeline.columns import IMAGE_URI, ITEM_ID
from fashion_search_pipeline.evaluation.held_out import HELD_OUT, IN_SAMPLE
from fashion_search_pipeline.evaluation.recommendation import (
    Recommendation,
    best_fusion,
    best_model,
    strategy_order,
    task_order,
)
from fashion_search_pipeline.evaluation.retrieval import (
    CAPTIONS_PREFIX,
    IMAGE_SEARCH,
    IMAGE_TO_IMAGE,
    IMAGE_TO_TEXT,
    NDCG_K,
    RECALL_KS,
    TEXT_SEARCH,
    TEXT_TO_IMAGE,
    TaskResult,
)
from fashion_search_pipeline.evaluation.shopper_queries import JUDGED_SEARCH, SHOPPER_SEARCH
from fashion_search_pipeline.evaluation.suite import CAPTIONS_KIND, Evaluation
from fashion_search_pipeline.evaluation.task_mix import mix_sentence
from fashion_search_pipeline.markdown import markdown_table
from fashion_search_pipeline.store.fusion import STRATEGIES

TABLE_KS = (1, 5, 10)
SUMMARY_FILE = "summary.md"
METRICS_FILE = "metrics.json"
RECALL_PLOT_FILE = "recall_at_k.png"
EXAMPLES_FILE = "examples.png"
PER_QUERY_FILE = "per_query_ranks.parquet"
INLINE_PNG_LIMIT = 100_000

TASK_TITLES = {
    TEXT_TO_IMAGE: "text → image",
    IMAGE_TO_TEXT: "image → text",
    IMAGE_TO_IMAGE: "image → image",
    SHOPPER_SEARCH: "shopper queries (fused)",
    JUDGED_SEARCH: "judged queries (fused)",
    TEXT_SEARCH: "text search (fused)",
    IMAGE_SEARCH: "image search (fused)",
}

HELD_OUT_NOTE = (
    "Each trained model is evaluated three times: on all items (the fusion table above, which chooses "
    "its fusion), on only the items its training held out (held-out: honest figures), and on as many "
    "items it was trained on (in-sample: optimistic). Each restricted run is a catalog of that size, so "
    "compare held-out with in-sample; both read higher than all items because their catalogs are smaller."
)

THUMB = 88
QUERY_CELL = 220
EXAMPLES_PER_TASK = {TEXT_SEARCH: 3, IMAGE_SEARCH: 2, TEXT_TO_IMAGE: 2}
EXAMPLES_PER_CAPTIONS_TASK = 2
EXAMPLE_RESULTS = 5
RELEVANT_COLOUR = (40, 160, 60)
OTHER_COLOUR = (200, 60, 50)


def task_title(task: str) -> str:
    """A task's display name."""
    if task.startswith(CAPTIONS_PREFIX):
        return f"captions {task.removeprefix(CAPTIONS_PREFIX)} (fused)"
    return TASK_TITLES.get(task, task)


SUBSET_TITLES = {None: "all", HELD_OUT: "held-out", IN_SAMPLE: "in-sample"}


def subset_order(subset: str | None) -> tuple[int, str]:
    """Sort key of a result's item subset: all items, held-out, in-sample, then any other."""
    order = list(SUBSET_TITLES)
    return (order.index(subset) if subset in order else len(order), subset or "")


def metric_rows(results: Sequence[TaskResult]) -> list[dict]:
    """One flat dict per result: model, task, strategy, subset (None: all items), then metrics.as_dict()
    (None where undefined)."""
    return [
        {"model": r.model, "task": r.task, "strategy": r.strategy, "subset": r.subset, **r.metrics.as_dict()}
        for r in sorted(
            results, key=lambda r: (r.model, subset_order(r.subset), task_order(r.task), strategy_order(r.strategy))
        )
    ]


def _all_items(results: Sequence[TaskResult]) -> list[TaskResult]:
    return [r for r in results if r.subset is None]


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def metrics_table(results: Sequence[TaskResult]) -> str:
    """Markdown: one row per model, task and fusion strategy; the metrics as columns."""
    headers = ["model", "items", "task", "fusion", "queries", "skipped", "MRR"]
    headers += [f"R@{k}" for k in TABLE_KS] + [f"nDCG@{NDCG_K}", "median rank"]
    rows = [
        [row["model"], SUBSET_TITLES.get(row["subset"], row["subset"]), task_title(row["task"]), row["strategy"] or "",
         row["queries"], row["skipped"], _fmt(row["mrr"])]
        + [_fmt(row[f"recall@{k}"]) for k in TABLE_KS]
        + [_fmt(row[f"ndcg@{NDCG_K}"]), _fmt(row["median_rank"], 1)]
        for row in metric_rows(results)
    ]
    return markdown_table(headers, rows)


def fusion_table(results: Sequence[TaskResult], recommendation: Recommendation | None) -> str:
    """Markdown: MRR of each model and fusion strategy on each fused search task, and their mean."""
    mrr: defaultdict[tuple[str, str], dict[str, float | None]] = defaultdict(dict)
    for result in _all_items(results):
        if result.strategy is not None:
            mrr[(result.model, result.strategy)][result.task] = result.metrics.mrr
    tasks = sorted({task for values in mrr.values() for task in values}, key=task_order)
    rows = []
    for model, strategy in sorted(mrr, key=lambda pair: (pair[0], STRATEGIES.index(pair[1]))):
        values = [mrr[(model, strategy)].get(task) for task in tasks]
        known = [v for v in values if v is not None]
        best = recommendation is not None and (model, strategy) == (recommendation.model, recommendation.strategy)
        mark = (lambda text: f"**{text}**") if best else (lambda text: text)
        mean = float(np.mean(known)) if known else None
        rows.append([mark(model), mark(strategy)] + [_fmt(v) for v in values] + [mark(_fmt(mean))])
    return markdown_table(["model", "fusion"] + [task_title(t) for t in tasks] + ["mean"], rows)


def held_out_table(results: Sequence[TaskResult]) -> str:
    """Markdown: MRR of each task (and fusion) of a trained model on its held-out items, its training
    items and all items, side by side (empty when no result was restricted to a subset)."""
    mrr: defaultdict[tuple[str, str, str | None], dict[str | None, float | None]] = defaultdict(dict)
    models = {r.model for r in results if r.subset is not None}
    for result in results:
        if result.model in models:
            mrr[(result.model, result.task, result.strategy)][result.subset] = result.metrics.mrr
    if not mrr:
        return ""
    subsets = sorted({subset for values in mrr.values() for subset in values}, key=subset_order)
    keys = sorted(mrr, key=lambda key: (key[0], task_order(key[1]), strategy_order(key[2])))
    headers = ["model", "task", "fusion"] + [f"MRR {SUBSET_TITLES.get(s, s)}" for s in subsets]
    rows = [[model, task_title(task), strategy or ""] + [_fmt(mrr[(model, task, strategy)].get(s)) for s in subsets]
            for model, task, strategy in keys]
    return markdown_table(headers, rows)


def zero_shot_table(evaluation: Evaluation) -> str:
    """Markdown: zero-shot accuracy and macro-F1 per model and attribute, next to the majority baseline."""
    headers = ["model", "attribute", "labels", "items", "accuracy", "macro-F1", "majority baseline", "majority label"]
    rows = [
        [model, r.attribute, len(r.labels), r.n, _fmt(r.accuracy), _fmt(r.macro_f1), _fmt(r.majority_accuracy),
         r.majority_label or "–"]
        for model, reports in sorted(evaluation.zero_shot.items())
        for r in reports
    ]
    return markdown_table(headers, rows)


def _definitions(evaluation: Evaluation) -> list[str]:
    """What each evaluated task measures, and how the metrics are defined."""
    labels = ", ".join(evaluation.label_columns) or "(no labels)"
    catalog = {
        TEXT_TO_IMAGE: "text → image: each item's description as a query; relevant: that item's image (and the "
        "images of items with the same description).",
        IMAGE_TO_TEXT: "image → text: each item's image as a query; relevant: its description (and identical ones).",
        IMAGE_TO_IMAGE: f"image → image: each image as a query, the item itself left out; relevant: the other items "
        f"with the same {labels}.",
        TEXT_SEARCH: f"text search: one query per combination of {labels} (e.g. \"Men Black Jackets\"); relevant: "
        "the items with exactly those labels.",
        IMAGE_SEARCH: "image search: the image → image queries, searched in both tables (CatalogSearch.image).",
        SHOPPER_SEARCH: "shopper queries: what shoppers type, generated from attributes and brand words with "
        "synonyms (\"puma white sneakers\", \"joggers for men\"), never equal to a description; relevant: the "
        "items whose attributes match; per query kind as shopper_search/<kind>.",
        JUDGED_SEARCH: "judged queries: the shop's own query file; relevant: its listed items or attribute matches.",
    }
    captions = {
        TEXT_TO_IMAGE: "text → image: each caption as a query; relevant: its image.",
        IMAGE_TO_TEXT: "image → text: each image as a query; relevant: all of its captions.",
    }
    meaning = captions if evaluation.kind == CAPTIONS_KIND else catalog
    tasks = sorted({r.task for r in evaluation.results}, key=task_order)
    lines = [f"- {meaning[task]}" for task in tasks if task in meaning]
    if any(task.startswith(CAPTIONS_PREFIX) for task in tasks):
        lines.append("- captions <file>: each caption of the evaluation file as a query; relevant: its image's item.")
    if any(r.strategy is not None for r in evaluation.results):
        depth = "every candidate" if evaluation.depth is None else f"the top {evaluation.depth} of each table"
        lines.append(
            f"- fused search ranks what CatalogSearch fuses for k = 10 ({depth}): raw = best cosine, rrf = "
            "reciprocal-rank fusion (k = 60), weighted = mean cosine, image / text = one table only; keyword = "
            "BM25 full-text search alone, hybrid = min-max scaled best cosine (as raw) mixed with BM25 over its best, "
            "hybrid_rrf = rrf over image, text and keyword (text queries; for an image query both hybrids rank "
            "as rrf)."
        )
        lines.append(f"- the fusion choice weighs the search tasks as evaluation.task_mix: {mix_sentence(tasks)}.")
    lines.append(
        "- MRR; recall@k (BEIR: the share of a query's relevant items in the top k); nDCG@10 (binary relevance); "
        "median rank of the first relevant item. Ties are broken by item id; queries without any relevant item "
        "are skipped and counted."
    )
    return lines


def summary_markdown(evaluation: Evaluation, recommendation: Recommendation | None) -> str:
    """The whole report as markdown: recommendation, fusion table, metrics table, zero-shot table, notes."""
    parts = [f"# Retrieval evaluation: {evaluation.dataset}", ""]
    if recommendation is not None:
        parts.append(f"**Recommendation:** {recommendation.sentence()}")
    else:
        parts.append("**Nothing was evaluated.** " + (" ".join(evaluation.notes) or "No results."))
    if any(r.strategy is not None for r in evaluation.results):
        parts += ["", "## Fusion strategies (MRR)", "", fusion_table(evaluation.results, recommendation)]
    held_out = held_out_table(evaluation.results)
    if held_out:
        parts += ["", "## Held-out vs in-sample items (trained models)", "", HELD_OUT_NOTE, "", held_out]
    if evaluation.results:
        parts += ["", "## Models × metrics", "", metrics_table(evaluation.results)]
    if any(evaluation.zero_shot.values()):
        parts += ["", "## Zero-shot attribute classification", "", zero_shot_table(evaluation)]
    if evaluation.results:
        parts += ["", "## Definitions", "", *_definitions(evaluation)]
    if evaluation.notes:
        parts += ["", "## Notes", "", *[f"- {note}" for note in evaluation.notes]]
    return "\n".join(parts) + "\n"


def recall_plot(results: Sequence[TaskResult]) -> bytes:
    """PNG: recall@k against k over all items, one panel per task, one line per model (and fusion strategy)."""
    from matplotlib.figure import Figure
    results = _all_items(results)
    tasks = sorted({r.task for r in results}, key=task_order)
    columns = max(1, min(3, len(tasks)))
    rows = max(1, math.ceil(len(tasks) / columns))
    figure = Figure(figsize=(4.4 * columns, 3.3 * rows), dpi=90, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    if not tasks:
        axes[0].text(0.5, 0.5, "no results", ha="center", va="center")
        axes[0].set_axis_off()
    for ax, task in zip(axes, tasks):
        lines = sorted((r for r in results if r.task == task), key=lambda r: (r.model, strategy_order(r.strategy)))
        for result in lines:
            points = [(k, v) for k, v in result.metrics.recall.items() if v is not None]
            if not points:
                continue
            label = result.model if result.strategy is None else f"{result.model} · {result.strategy}"
            ax.plot([k for k, _ in points], [v for _, v in points], marker="o", markersize=3, label=label)
        ax.set_title(task_title(task), fontsize=10)
        ax.set_xscale("log")
        ax.set_xticks(list(RECALL_KS), [str(k) for k in RECALL_KS])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("k", fontsize=8)
        ax.set_ylabel("recall@k", fontsize=8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in axes[len(tasks) :]:
        ax.set_axis_off()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _example_rows(evaluation: Evaluation, recommendation: Recommendation | None) -> list[tuple[TaskResult, int]]:
    """(result, query position) pairs to show: a few queries per task of the recommended model and fusion."""
    if recommendation is not None:
        model, strategy = recommendation.model, recommendation.strategy
    elif evaluation.results:
        model, strategy = evaluation.results[0].model, None
    else:
        return []
    shown = []
    for result in sorted(_all_items(evaluation.results), key=lambda r: task_order(r.task)):
        if result.model != model or result.candidate_kind == "text" or result.strategy not in (strategy, None):
            continue
        if result.strategy is None and result.task != TEXT_TO_IMAGE:
            continue
        count = EXAMPLES_PER_TASK.get(result.task, EXAMPLES_PER_CAPTIONS_TASK)
        answered = [i for i, ranks in enumerate(result.ranks) if ranks.size]
        if answered:
            picks = np.unique(np.linspace(0, len(answered) - 1, min(count, len(answered))).round().astype(int))
            shown += [(result, answered[p]) for p in picks]
    return shown


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _thumbnail(data: bytes | None) -> Image.Image:
    tile = Image.new("RGB", (THUMB, THUMB), (235, 235, 235))
    if data is not None:
        try:
            picture = Image.open(io.BytesIO(data))
            picture.draft("RGB", (THUMB, THUMB))
            picture = picture.convert("RGB")
            picture.thumbnail((THUMB, THUMB))
            tile.paste(picture, ((THUMB - picture.width) // 2, (THUMB - picture.height) // 2))
            return tile
        except (OSError, ValueError, Image.DecompressionBombError):
            pass
    ImageDraw.Draw(tile).text((THUMB // 2 - 4, THUMB // 2 - 8), "?", fill=(120, 120, 120), font=_font(14))
    return tile


def example_grid(
    evaluation: Evaluation, recommendation: Recommendation | None, read_image: Callable[[str], bytes]
) -> bytes:
    """PNG: example queries (rows) with their top results as thumbnails, framed green when relevant."""
    rows = _example_rows(evaluation, recommendation)
    header = 28
    row_height = THUMB + 26
    width = QUERY_CELL + EXAMPLE_RESULTS * (THUMB + 10) + 10
    canvas = Image.new("RGB", (width, header + max(1, len(rows)) * row_height), "white")
    draw = ImageDraw.Draw(canvas)
    if not rows:
        draw.text((10, 8), f"{evaluation.dataset}: no example queries to show", fill="black", font=_font(13))
        return _png(canvas)
    model = rows[0][0].model
    fusion = f", fusion {recommendation.strategy}" if recommendation is not None and recommendation.strategy else ""
    title = f"{evaluation.dataset}: model {model}{fusion} (green frame = relevant)"
    draw.text((10, 8), title, fill="black", font=_font(13))
    uris = dict(zip(*evaluation.items[model].select(ITEM_ID, IMAGE_URI).get_columns()))
    cache: dict[str, bytes | None] = {}

    def picture(item_id: str) -> Image.Image:
        uri = uris.get(item_id)
        if uri is not None and uri not in cache:
            try:
                cache[uri] = read_image(uri)
            except (OSError, ValueError):
                cache[uri] = None
        return _thumbnail(cache.get(uri) if uri is not None else None)

    for row, (result, position) in enumerate(rows):
        top = header + row * row_height
        draw.text((10, top), task_title(result.task).replace("→", "->"), fill=(90, 90, 90), font=_font(11))
        query = result.queries[position]
        if result.query_kind == "image":
            canvas.paste(picture(query), (10, top + 16))
            draw.text((THUMB + 16, top + 20), "query image", fill="black", font=_font(11))
        else:
            wrapped = textwrap.wrap(query, 30)[:5]
            draw.multiline_text((10, top + 18), "\n".join(wrapped), fill="black", font=_font(12), spacing=2)
        relevant_positions = set(result.ranks[position].tolist())
        for column, item_id in enumerate(result.top[position][:EXAMPLE_RESULTS]):
            left = QUERY_CELL + column * (THUMB + 10)
            colour = RELEVANT_COLOUR if column + 1 in relevant_positions else OTHER_COLOUR
            draw.rectangle([left - 3, top + 13, left + THUMB + 2, top + 16 + THUMB + 2], outline=colour, width=3)
            canvas.paste(picture(item_id), (left, top + 16))
            draw.text((left, top), f"#{column + 1}", fill=colour, font=_font(11))
    return _png(canvas)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def per_query_frame(results: Sequence[TaskResult]) -> pl.DataFrame:
    """One row per evaluated query: model, task, strategy, subset (null: all items), query, first relevant rank, all relevant ranks, top ids."""
    records = defaultdict(list)
    for result in results:
        for query, ranks, top in zip(result.queries, result.ranks, result.top):
            records["model"].append(result.model)
            records["task"].append(result.task)
            records["strategy"].append(result.strategy)
            records["subset"].append(result.subset)
            records["query_kind"].append(result.query_kind)
            records["query"].append(query)
            records["first_rank"].append(int(ranks[0]) if ranks.size else None)
            records["relevant"].append(int(ranks.size))
            records["ranks"].append([int(r) for r in ranks])
            records["top"].append(list(top))
    schema = {
        "model": pl.Utf8, "task": pl.Utf8, "strategy": pl.Utf8, "subset": pl.Utf8, "query_kind": pl.Utf8, "query": pl.Utf8,
        "first_rank": pl.Int64, "relevant": pl.Int64, "ranks": pl.List(pl.Int64), "top": pl.List(pl.Utf8),
    }
    return pl.DataFrame({name: records[name] for name in schema}, schema=schema)


def markdown_image(png: bytes, alt: str) -> str:
    """A markdown image embedding the PNG as a data: URI (shown inline without a file server).

    A PNG over INLINE_PNG_LIMIT bytes (photo thumbnails) is embedded as a JPEG instead,
    to keep run metadata small; the PNG file itself is unchanged.
    """
    data, mime = png, "image/png"
    if len(png) > INLINE_PNG_LIMIT:
        buffer = io.BytesIO()
        with Image.open(io.BytesIO(png)) as image:
            image.convert("RGB").save(buffer, format="JPEG", quality=85)
        data, mime = buffer.getvalue(), "image/jpeg"
    return f"![{alt}](data:{mime};base64,{base64.b64encode(data).decode('ascii')})"


@dataclass(frozen=True)
class ReportFiles:
    """Where write_reports put each report, and what it said."""

    folder: Path
    summary: Path
    metrics: Path
    recall_plot: Path
    examples: Path
    per_query: Path
    markdown: str
    recommendation: Recommendation | None


def write_reports(evaluation: Evaluation, folder: str | Path, read_image: Callable[[str], bytes]) -> ReportFiles:
    """Write summary.md, metrics.json, recall_at_k.png, examples.png and per_query_ranks.parquet to `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    recommendation = best_fusion(evaluation.results) or best_model(evaluation.results)
    markdown = summary_markdown(evaluation, recommendation)
    files = ReportFiles(
        folder=folder,
        summary=folder / SUMMARY_FILE,
        metrics=folder / METRICS_FILE,
        recall_plot=folder / RECALL_PLOT_FILE,
        examples=folder / EXAMPLES_FILE,
        per_query=folder / PER_QUERY_FILE,
        markdown=markdown,
        recommendation=recommendation,
    )
    files.summary.write_text(markdown, encoding="utf-8")
    document = {
        "dataset": evaluation.dataset,
        "recommendation": asdict(recommendation) if recommendation is not None else None,
        "metrics": metric_rows(evaluation.results),
        "zero_shot": [
            {"model": model, **asdict(report)}
            for model, reports in sorted(evaluation.zero_shot.items())
            for report in reports
        ],
        "notes": evaluation.notes,
    }
    files.metrics.write_text(json.dumps(document, indent=2, allow_nan=False), encoding="utf-8")
    files.recall_plot.write_bytes(recall_plot(evaluation.results))
    files.examples.write_bytes(example_grid(evaluation, recommendation, read_image))
    per_query_frame(evaluation.results).write_parquet(files.per_query)
    return files
