"""The weighted mix of search tasks that chooses each model's fusion strategy (fusion_choices).

What shoppers type weighs most: the shopper-query task (and a shop's own judged queries) half,
image search (a photo as the query) 0.3, the label-combination queries ("Men Black Jackets")
and caption files 0.2. Per-kind breakdowns ("shopper_search/brand_type") and one-direction
tasks carry no weight. Only tasks every compared strategy has count; the weights of those
are renormalised to sum to 1.
"""

from __future__ import annotations

from collections.abc import Mapping

from fashion_search_pipeline.evaluation.retrieval import CAPTIONS_PREFIX, IMAGE_SEARCH, TEXT_SEARCH
from fashion_search_pipeline.evaluation.shopper_queries import JUDGED_SEARCH, SHOPPER_SEARCH

TASK_WEIGHTS = {SHOPPER_SEARCH: 0.5, JUDGED_SEARCH: 0.5, IMAGE_SEARCH: 0.3, TEXT_SEARCH: 0.2}
CAPTIONS_WEIGHT = 0.2
# Strategies that cannot answer every kind of query (BM25 alone has nothing for a photo): never chosen.
NOT_CHOSEN = ("keyword",)


def task_weight(task: str) -> float:
    """The weight of `task` in the mix (0: not part of it)."""
    if task.startswith(CAPTIONS_PREFIX):
        return CAPTIONS_WEIGHT
    return TASK_WEIGHTS.get(task, 0.0)


def weighted_mrr(mrr_by_task: Mapping[str, float], tasks) -> float:
    """The mix's weighted mean MRR over `tasks`; the plain mean when none of them has a weight."""
    weights = {task: task_weight(task) for task in tasks}
    total = sum(weights.values())
    if total <= 0:
        return sum(mrr_by_task[task] for task in tasks) / len(tasks)
    return sum(mrr_by_task[task] * weight for task, weight in weights.items()) / total


def mix_sentence(tasks) -> str:
    """The mix as people read it: "shopper_search 0.50, image_search 0.30, text_search 0.20"."""
    weights = {task: task_weight(task) for task in tasks}
    total = sum(weights.values()) or 1.0
    return ", ".join(f"{task} {weight / total:.2f}" for task, weight in weights.items() if weight > 0)
