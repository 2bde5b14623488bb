"""Retrieval tasks over full score matrices: one modality to another, and fused cross-modal search.

Every query is scored against every candidate, so every relevant candidate has a
rank (metrics.ranks_from_scores: score descending, ties to the lower index). The
fused rankings follow store.fusion (the code CatalogSearch runs): each table
contributes its `depth` best candidates, ranked by score then item_id, and the
strategies raw / rrf / weighted / image / text combine them exactly as `fuse`
does. Candidates that neither table returned come after those it did, in the
order the strategy gives when both tables return everything, so ranks beyond the
fused list stay meaningful for MRR and the median rank. A candidate a table can
never return (scored -inf, e.g. the query image's own item) comes last.

Tasks on a catalog (one model's ModelVectors):
  text_to_image   each description -> its own image (and images of items with the same description)
  image_to_text   each image -> its own description (same relevance)
  image_to_image  each image -> the other items sharing its label set (the query item is left out)
  text_search     a query built from a label set ("Men Black Jackets") -> the items with those labels,
                  fused over both tables, per strategy
  image_search    each image -> the other items sharing its label set, fused, per strategy
  captions:<name> each caption of an evaluation file -> its image, fused, per strategy
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from fashion_search_pipeline.columns import DESCRIPTION, MODALITIES
from fashion_search_pipeline.evaluation.evaluation_sets import EvaluationSet, catalog_text_to_image
from fashion_search_pipeline.evaluation.metrics import RetrievalMetrics, compute_metrics, ranks_from_scores
from fashion_search_pipeline.evaluation.shopper_queries import (
    ARTICLE_TYPE,
    JUDGED_SEARCH,
    SHOPPER_SEARCH,
    shopper_queries,
)
from fashion_search_pipeline.evaluation.shopper_queries import KINDS as SHOPPER_KINDS
from fashion_search_pipeline.evaluation.vectors import ModelVectors
from fashion_search_pipeline.store.fusion import (
    CANDIDATES_PER_RESULT,
    HYBRID_DECIMALS,
    HYBRID_WEIGHTS,
    KEYWORD_STRATEGIES,
    RRF_K,
    STRATEGIES,
)
from fashion_search_pipeline.store.keyword import KEYWORD

TEXT_TO_IMAGE = "text_to_image"
IMAGE_TO_TEXT = "image_to_text"
IMAGE_TO_IMAGE = "image_to_image"
TEXT_SEARCH = "text_search"
IMAGE_SEARCH = "image_search"
CAPTIONS_PREFIX = "captions:"

# CatalogSearch fetches k * CANDIDATES_PER_RESULT hits per table; the metrics look at k = 10.
SEARCH_K = 10
FUSION_DEPTH = SEARCH_K * CANDIDATES_PER_RESULT
RECALL_KS = (1, 5, 10, 20, 50)
NDCG_K = 10
TOP_SHOWN = 10
DEFAULT_LABEL_COLUMNS = ("gender", "colour", "article_type")
# Score cells held per block of queries (each block keeps a few matrices of this size).
_BLOCK_CELLS = 1_000_000

TextEncoder = Callable[[Sequence[str]], np.ndarray]
# BM25 scores (queries, candidates) of the keyword leg for text queries, -inf where it returns nothing.
KeywordScorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class TaskResult:
    """One model's ranking of one task's queries (for search tasks: with one fusion strategy).

    query_kind / candidate_kind: "text" or "image" ("product" for fused search).
    queries: the query text, or the query item's id. ranks: each query's relevant
    candidates' 1-based ranks. top: each query's TOP_SHOWN best candidate ids.
    subset: None when every item was a candidate; else the item subset the task was restricted to
    (held_out.HELD_OUT, held_out.IN_SAMPLE for a trained model's held-out and training items).
    """

    model: str
    task: str
    strategy: str | None
    query_kind: str
    candidate_kind: str
    metrics: RetrievalMetrics
    queries: list[str]
    ranks: list[np.ndarray]
    top: list[list[str]]
    subset: str | None = None


def fused_score_sets(
    image: np.ndarray,
    text: np.ndarray,
    strategies: Sequence[str] = STRATEGIES,
    depth: int | None = FUSION_DEPTH,
    keyword: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Ranking scores (queries, candidates) of each fusion strategy: higher ranks first, ties to the lower index.

    `image` and `text` hold each candidate's cosine in the image and the text table
    (-inf: the table never returns it). For "image" and "text" the result is that
    table's cosines; otherwise it encodes the order store.fusion.fuse gives to each
    table's `depth` best candidates (None: all of them), then the rest as described
    in the module docstring, then the candidates no table returns. The per-table
    rankings are computed once for all strategies.

    `keyword` holds each candidate's BM25 score from the keyword leg (-inf: not returned);
    without it (image queries) "keyword" is left out and the hybrids rank as their vector
    strategies, as store.fusion.fuse does for a query without keyword hits.
    """
    unknown = [strategy for strategy in strategies if strategy not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown fusion strategies {unknown}; choose from {STRATEGIES}")
    if image.shape != text.shape or image.ndim != 2:
        raise ValueError(f"image and text scores must be matrices of one shape, got {image.shape} and {text.shape}")
    scores = {"image": np.asarray(image, dtype=np.float64), "text": np.asarray(text, dtype=np.float64)}
    if keyword is not None:
        if keyword.shape != image.shape:
            raise ValueError(f"keyword scores must have the shape {image.shape}, got {keyword.shape}")
        scores[KEYWORD] = np.asarray(keyword, dtype=np.float64)
    else:
        strategies = [strategy for strategy in strategies if strategy != KEYWORD]
    fused = {strategy: scores[strategy] for strategy in strategies if strategy in scores}
    combined = [strategy for strategy in strategies if strategy not in scores]
    if not combined:
        return fused
    ranks = {modality: _rank_matrix(values) for modality, values in scores.items()}
    anywhere = {modality: np.isfinite(values) for modality, values in scores.items()}
    returned = anywhere
    if depth is not None:
        returned = {modality: anywhere[modality] & (ranks[modality] <= depth) for modality in scores}
    index = np.broadcast_to(np.arange(image.shape[1]), image.shape)
    for strategy in combined:
        legs = list(scores) if strategy in KEYWORD_STRATEGIES else list(MODALITIES)
        listed = np.logical_or.reduce([returned[leg] for leg in legs])
        found = np.logical_or.reduce([anywhere[leg] for leg in legs])
        tier = np.where(listed, 0, np.where(found, 1, 2))
        value = np.where(
            listed,
            _combined(strategy, scores, ranks, returned),
            np.where(found, _combined(strategy, scores, ranks, anywhere), 0.0),
        )
        order = np.lexsort((index, -value, tier), axis=-1)
        fused[strategy] = np.where(found, -_positions(order).astype(np.float64), -np.inf)
    return fused


def _rank_matrix(scores: np.ndarray) -> np.ndarray:
    """Each candidate's 1-based rank in its row: score descending, ties to the lower index."""
    return _positions(np.argsort(-scores, axis=1, kind="stable")) + 1


def _positions(order: np.ndarray) -> np.ndarray:
    """The inverse permutation of each row: where each candidate stands in `order` (0-based)."""
    positions = np.empty_like(order)
    np.put_along_axis(positions, order, np.broadcast_to(np.arange(order.shape[1]), order.shape), axis=1)
    return positions


def _combined(
    strategy: str, scores: dict[str, np.ndarray], ranks: dict[str, np.ndarray], returned: dict[str, np.ndarray]
) -> np.ndarray:
    """store.fusion's fused score (default weights) of the candidates each leg returned."""
    vector = [m for m in scores if m in MODALITIES]
    if strategy == "raw":
        return np.maximum(*[np.where(returned[m], scores[m], -np.inf) for m in vector])
    if strategy in ("rrf", "hybrid_rrf"):
        legs = vector if strategy == "rrf" else list(scores)
        weight = {m: 1.0 if strategy == "rrf" else HYBRID_WEIGHTS[m] for m in legs}
        return sum(np.where(returned[m], weight[m] / (RRF_K + ranks[m]), 0.0) for m in legs)
    if strategy == "weighted":
        return sum(_with_lowest(scores[m], returned[m]) / len(vector) for m in vector)
    # hybrid: the vector legs' raw score (a candidate only the keyword leg returned counts the
    # lowest) min-max scaled over the listed candidates, plus BM25 over the query's best BM25;
    # rows without keyword hits rank as rrf.
    rrf = _combined("rrf", scores, ranks, returned)
    if KEYWORD not in scores:
        return rrf
    raw = np.maximum(*[np.where(returned[m], scores[m], -np.inf) for m in vector])
    by_vector = returned["image"] | returned["text"]
    lowest = np.where(by_vector, raw, np.inf).min(axis=1, keepdims=True)
    raw = np.where(by_vector, raw, np.where(np.isfinite(lowest), lowest, 0.0))
    considered = by_vector | returned[KEYWORD]
    low = np.where(considered, raw, np.inf).min(axis=1, keepdims=True)
    high = np.where(considered, raw, -np.inf).max(axis=1, keepdims=True)
    spread = np.where(np.isfinite(high - low) & (high > low), high - low, 1.0)
    scaled = np.where(high > low, (raw - np.where(np.isfinite(low), low, 0.0)) / spread, 1.0)
    best = np.where(returned[KEYWORD], scores[KEYWORD], -np.inf).max(axis=1, keepdims=True)
    best = np.where(np.isfinite(best) & (best > 0), best, 1.0)
    keyword = np.where(returned[KEYWORD], scores[KEYWORD] / best, 0.0)
    share = sum(HYBRID_WEIGHTS[m] for m in vector) / sum(HYBRID_WEIGHTS[m] for m in scores)
    hybrid = np.round(share * scaled + (1 - share) * keyword, HYBRID_DECIMALS)
    return np.where(returned[KEYWORD].any(axis=1, keepdims=True), hybrid, rrf)


def _with_lowest(values: np.ndarray, returned: np.ndarray) -> np.ndarray:
    """A leg's scores; a candidate it did not return counts its lowest returned score (fusion's "min"), 0 if none."""
    lowest = np.where(returned, values, np.inf).min(axis=1, keepdims=True)
    lowest = np.where(np.isfinite(lowest), lowest, 0.0)
    return np.where(returned, values, lowest)


@dataclass
class _Task:
    """A task's queries and, per query, its relevant candidates (positions in candidate_ids)."""

    task: str
    query_kind: str
    candidate_kind: str
    queries: list[str]
    relevant: list[set[int]]
    candidate_ids: list[str]
    extra_skipped: int = 0


def _block_size(n_candidates: int) -> int:
    return max(1, _BLOCK_CELLS // max(1, n_candidates))


def _sampled(n_queries: int, max_queries: int | None, seed: int) -> np.ndarray:
    """All query positions, or a seeded sample of `max_queries` of them (sorted)."""
    if max_queries is None or n_queries <= max_queries:
        return np.arange(n_queries)
    return np.sort(np.random.default_rng(seed).choice(n_queries, size=max_queries, replace=False))


def _top_ids(scores: np.ndarray, candidate_ids: list[str]) -> list[list[str]]:
    """Each query's TOP_SHOWN best candidates (never one scored -inf, i.e. left out)."""
    shown = min(TOP_SHOWN, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :shown]
    return [[candidate_ids[j] for j in row if scores[i, j] > -np.inf] for i, row in enumerate(order)]


def _run(
    task: _Task,
    model: str,
    score_blocks: Callable[[np.ndarray], dict[str | None, np.ndarray]],
    chosen: np.ndarray,
) -> list[TaskResult]:
    """Rank the chosen queries block by block; one result per key of score_blocks' output."""
    ranks: dict[str | None, list[np.ndarray]] = defaultdict(list)
    tops: dict[str | None, list[list[str]]] = defaultdict(list)
    size = _block_size(len(task.candidate_ids))
    for start in range(0, len(chosen), size):
        block = chosen[start : start + size]
        relevant = [task.relevant[i] for i in block]
        for strategy, scores in score_blocks(block).items():
            ranks[strategy] += ranks_from_scores(scores, relevant)
            tops[strategy] += _top_ids(scores, task.candidate_ids)
    strategies = list(ranks) or list(score_blocks(chosen[:0]))  # no query chosen: still one result each
    results = []
    for strategy in strategies:
        metrics = compute_metrics(ranks[strategy], ks=RECALL_KS, ndcg_k=NDCG_K)
        metrics = dataclasses.replace(metrics, skipped=metrics.skipped + task.extra_skipped)
        results.append(
            TaskResult(
                model=model,
                task=task.task,
                strategy=strategy,
                query_kind=task.query_kind,
                candidate_kind=task.candidate_kind,
                metrics=metrics,
                queries=[task.queries[i] for i in chosen],
                ranks=ranks[strategy],
                top=tops[strategy],
            )
        )
    return results


def label_keys(items: pl.DataFrame, label_columns: Sequence[str]) -> tuple[list[str], list[tuple[str, ...] | None]]:
    """The label columns the items have, and each item's label values (None when one is blank)."""
    present = [column for column in label_columns if column in items.columns]
    if not present:
        return present, [None] * items.height
    keys = []
    for values in items.select(present).iter_rows():
        cleaned = tuple((value or "").strip() for value in values)
        keys.append(cleaned if all(cleaned) else None)
    return present, keys


def _same_label_others(keys: list[tuple[str, ...] | None]) -> list[set[int]]:
    groups: defaultdict[tuple[str, ...], set[int]] = defaultdict(set)
    for index, key in enumerate(keys):
        if key is not None:
            groups[key].add(index)
    return [set() if key is None else groups[key] - {index} for index, key in enumerate(keys)]


def evaluate_model(
    vectors: ModelVectors,
    *,
    encode_text: TextEncoder | None = None,
    caption_sets: Mapping[str, EvaluationSet] | None = None,
    label_columns: Sequence[str] = DEFAULT_LABEL_COLUMNS,
    depth: int | None = FUSION_DEPTH,
    max_queries: int | None = None,
    seed: int = 0,
    keyword_scores: KeywordScorer | None = None,
    judged: EvaluationSet | None = None,
    subsets: Mapping[str, Sequence[str]] | None = None,
) -> tuple[list[TaskResult], list[str]]:
    """Every catalog task for one model; returns the results and notes on what was left out.

    encode_text embeds label queries, shopper queries and captions (None: those tasks are left
    out); caption_sets are evaluation files already read against the catalog's item ids.
    keyword_scores adds the keyword leg (BM25) to every text-query task, so "keyword" and the
    hybrid strategies are measured too; `judged` is a shop's own judged query set.

    `subsets` (name -> item ids, e.g. a trained model's held-out and training items) runs every
    task again as if the catalog held only those items: candidates, image queries and relevance
    restricted to them, the same text queries (a query without a relevant item there is skipped
    and counted). Those results carry the subset's name in TaskResult.subset.
    """
    model = vectors.model
    if not vectors.item_ids:
        return [], [f"model {model}: its tables hold no items, nothing to evaluate"]
    notes: list[str] = []
    text_sets: dict[str, EvaluationSet] = {}
    labels, keys = label_keys(vectors.items, label_columns)
    if labels:
        text_sets[TEXT_SEARCH] = _label_queries(vectors.item_ids, keys)
    else:
        notes.append(
            f"model {model}: no label column among {list(label_columns)}, so image_to_image, "
            "text_search and image_search are left out"
        )
    kinds: list[str] = []
    if ARTICLE_TYPE in vectors.items.columns:
        text_sets[SHOPPER_SEARCH], kinds = shopper_queries(vectors.items, seed=seed)
    else:
        notes.append(f"model {model}: no {ARTICLE_TYPE!r} column, so {SHOPPER_SEARCH} is left out")
    if judged is not None:
        text_sets[JUDGED_SEARCH] = judged
    for name, captions in (caption_sets or {}).items():
        text_sets[f"{CAPTIONS_PREFIX}{name}"] = captions
    if text_sets and encode_text is None:
        notes.append(
            f"model {model}: not loadable here, so {', '.join(text_sets)} (which encode new text) are left out"
        )
        text_sets = {}

    def tasks(part: ModelVectors) -> list[TaskResult]:
        results = _description_tasks(part, max_queries, seed)
        if labels:
            results += _image_query_tasks(part, label_keys(part.items, label_columns)[1], depth, max_queries, seed)
        for task_name, query_set in text_sets.items():
            task_results = _text_query_task(
                part, task_name, query_set, encode_text, depth, max_queries, seed, keyword_scores
            )
            results += task_results
            if task_name == SHOPPER_SEARCH:
                results += _per_kind(task_results, query_set.queries, kinds)
        return results

    if subsets and encode_text is not None:
        encode_text = _encoding_each_text_once(encode_text)  # the subsets ask for the same queries again
    results = tasks(vectors)
    for name, item_ids in (subsets or {}).items():
        results += [dataclasses.replace(result, subset=name) for result in tasks(vectors.subset(item_ids))]
    return results, notes


def _encoding_each_text_once(encode_text: TextEncoder) -> TextEncoder:
    """`encode_text` that encodes each distinct text once, however many calls ask for it."""
    vectors: dict[str, np.ndarray] = {}

    def encode(texts: Sequence[str]) -> np.ndarray:
        missing = [text for text in dict.fromkeys(texts) if text not in vectors]
        if missing:
            vectors.update(zip(missing, encode_text(missing)))
        return np.stack([vectors[text] for text in texts]) if texts else encode_text(texts)

    return encode


def _per_kind(results: list[TaskResult], queries: Sequence[str], kinds: Sequence[str]) -> list[TaskResult]:
    """Each shopper-search result again per query kind, as task "shopper_search/<kind>"."""
    kind_of = dict(zip(queries, kinds))
    split = []
    for result in results:
        positions: defaultdict[str, list[int]] = defaultdict(list)
        for position, query in enumerate(result.queries):
            positions[kind_of[query]].append(position)
        for kind in (*SHOPPER_KINDS, *sorted(set(positions) - set(SHOPPER_KINDS))):
            picked = positions.get(kind)
            if not picked:
                continue
            ranks = [result.ranks[i] for i in picked]
            split.append(
                dataclasses.replace(
                    result,
                    task=f"{SHOPPER_SEARCH}/{kind}",
                    metrics=compute_metrics(ranks, ks=RECALL_KS, ndcg_k=NDCG_K),
                    queries=[result.queries[i] for i in picked],
                    ranks=ranks,
                    top=[result.top[i] for i in picked],
                )
            )
    return split


def _description_tasks(vectors: ModelVectors, max_queries: int | None, seed: int) -> list[TaskResult]:
    """text_to_image and image_to_text between each item's description and its image."""
    ids, items = vectors.item_ids, vectors.items
    described = np.flatnonzero((items[DESCRIPTION].fill_null("").str.strip_chars().str.len_chars() > 0).to_numpy())
    own = catalog_text_to_image(items[described.tolist()]) if described.size else EvaluationSet("catalog", [], [])
    relevant = own.relevant_indices(ids)
    blank = len(ids) - described.size
    chosen = _sampled(described.size, max_queries, seed)
    forward = _Task(TEXT_TO_IMAGE, "text", "image", own.queries, relevant, ids, blank)
    backward = _Task(IMAGE_TO_TEXT, "image", "text", [ids[i] for i in described], relevant, ids, blank)
    return _run(forward, vectors.model, lambda b: {None: vectors.text[described[b]] @ vectors.image.T}, chosen) + _run(
        backward, vectors.model, lambda b: {None: vectors.image[described[b]] @ vectors.text.T}, chosen
    )


def _image_query_tasks(
    vectors: ModelVectors, keys: list[tuple[str, ...] | None], depth: int | None, max_queries: int | None, seed: int
) -> list[TaskResult]:
    """image_search per strategy, and image_to_image (its one-table `image` ranking)."""
    ids = vectors.item_ids

    def without_self(scores: np.ndarray, block: np.ndarray) -> np.ndarray:
        scores[np.arange(len(block)), block] = -np.inf
        return scores

    def scores(block: np.ndarray) -> dict[str | None, np.ndarray]:
        image = without_self(vectors.image[block] @ vectors.image.T, block)
        text = without_self(vectors.image[block] @ vectors.text.T, block)
        return fused_score_sets(image, text, depth=depth)

    task = _Task(IMAGE_SEARCH, "image", "product", ids, _same_label_others(keys), ids)
    results = _run(task, vectors.model, scores, _sampled(len(ids), max_queries, seed))
    one_table = next(r for r in results if r.strategy == "image")
    return [dataclasses.replace(one_table, task=IMAGE_TO_IMAGE, strategy=None, candidate_kind="image"), *results]


def _label_queries(ids: list[str], keys: list[tuple[str, ...] | None]) -> EvaluationSet:
    """One text query per label combination ("Men Black Jackets"), relevant: the items that have it."""
    groups: defaultdict[tuple[str, ...], set[str]] = defaultdict(set)
    for item_id, key in zip(ids, keys):
        if key is not None:
            groups[key].add(item_id)
    ordered = sorted(groups)
    return EvaluationSet(TEXT_SEARCH, [" ".join(key) for key in ordered], [groups[key] for key in ordered])


def _text_query_task(
    vectors: ModelVectors,
    task_name: str,
    query_set: EvaluationSet,
    encode_text: TextEncoder,
    depth: int | None,
    max_queries: int | None,
    seed: int,
    keyword_scores: KeywordScorer | None = None,
) -> list[TaskResult]:
    """New text queries (label, shopper and judged queries, captions) embedded by the model, fused
    search per strategy; with `keyword_scores`, the keyword leg and the hybrids too."""
    ids = vectors.item_ids
    chosen = _sampled(len(query_set), max_queries, seed)
    texts = [query_set.queries[i] for i in chosen]
    embedded = encode_text(texts) if chosen.size else vectors.text[:0]
    bm25 = keyword_scores(texts, ids) if keyword_scores is not None and chosen.size else None
    row_of = {query: row for row, query in enumerate(chosen)}

    def scores(block: np.ndarray) -> dict[str | None, np.ndarray]:
        rows = [row_of[i] for i in block]
        queries = embedded[rows]
        keyword = None if bm25 is None else bm25[rows]
        return fused_score_sets(queries @ vectors.image.T, queries @ vectors.text.T, depth=depth, keyword=keyword)

    relevant = query_set.relevant_indices(ids)
    task = _Task(task_name, "text", "product", query_set.queries, relevant, ids, query_set.skipped)
    return _run(task, vectors.model, scores, chosen)


def evaluate_caption_pairs(
    model: str,
    image_ids: list[str],
    image_vectors: np.ndarray,
    captions: EvaluationSet,
    caption_vectors: np.ndarray,
    *,
    max_queries: int | None = None,
    seed: int = 0,
) -> list[TaskResult]:
    """text_to_image (each caption -> its image) and image_to_text (each image -> its captions)
    for a set of images with several captions each, embedded in memory."""
    if len(captions) != len(caption_vectors) or len(image_ids) != len(image_vectors):
        raise ValueError("each caption and each image needs exactly one vector")
    relevant = captions.relevant_indices(image_ids)
    caption_ids = [f"{next(iter(r), '?')}#{i}" for i, r in enumerate(captions.relevant)]
    chosen = _sampled(len(captions), max_queries, seed)
    forward = _Task(TEXT_TO_IMAGE, "text", "image", captions.queries, relevant, image_ids, captions.skipped)
    results = _run(forward, model, lambda b: {None: caption_vectors[b] @ image_vectors.T}, chosen)

    captions_of: list[set[int]] = [set() for _ in image_ids]
    for caption, images in enumerate(relevant):
        for image in images:
            captions_of[image].add(caption)
    backward = _Task(IMAGE_TO_TEXT, "image", "text", image_ids, captions_of, caption_ids)
    chosen = _sampled(len(image_ids), max_queries, seed)
    results += _run(backward, model, lambda b: {None: image_vectors[b] @ caption_vectors.T}, chosen)
    return results
