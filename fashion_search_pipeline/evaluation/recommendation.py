"""Which model and fusion strategy to use, from the retrieval evaluation's MRR (report.py renders it).

The fused search tasks are weighed as evaluation.task_mix says; each model's best fusion is what
CatalogSearch records and follows (store.fusion_choices).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fashion_search_pipeline.evaluation.retrieval import (
    IMAGE_SEARCH,
    IMAGE_TO_IMAGE,
    IMAGE_TO_TEXT,
    TEXT_SEARCH,
    TEXT_TO_IMAGE,
    TaskResult,
)
from fashion_search_pipeline.evaluation.shopper_queries import JUDGED_SEARCH, SHOPPER_SEARCH
from fashion_search_pipeline.evaluation.task_mix import NOT_CHOSEN, mix_sentence, task_weight, weighted_mrr
from fashion_search_pipeline.store.fusion import STRATEGIES
from fashion_search_pipeline.store.fusion_choices import FusionChoice

TASK_ORDER = (TEXT_TO_IMAGE, IMAGE_TO_TEXT, IMAGE_TO_IMAGE, SHOPPER_SEARCH, JUDGED_SEARCH, TEXT_SEARCH, IMAGE_SEARCH)


def task_order(task: str) -> tuple[int, str]:
    """Sort key of a task: the order of TASK_ORDER, then any other task by name."""
    return (TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER), task)


def strategy_order(strategy: str | None) -> int:
    """Position of a fusion strategy in store.fusion.STRATEGIES (-1 for a one-direction task)."""
    return -1 if strategy is None else STRATEGIES.index(strategy)


@dataclass(frozen=True)
class Recommendation:
    """What to use, by mean MRR over `tasks`.

    With a fusion strategy (best_fusion): the model and strategy for CatalogSearch, and
    `others` holds the model's other strategies. Without one (best_model, for data with
    no fused search): the best model, and `others` holds the other models.
    """

    model: str
    strategy: str | None
    mrr: float
    tasks: tuple[str, ...]
    others: dict[str, float]

    def sentence(self) -> str:
        """One line for people: what to use, the figure, the alternatives (and what CatalogSearch now uses)."""
        others = ", ".join(f"{name} {value:.3f}" for name, value in sorted(self.others.items(), key=lambda kv: -kv[1]))
        over = f"mean MRR {self.mrr:.3f} over {', '.join(self.tasks)}"
        if self.strategy is not None and mix_sentence(self.tasks):
            over = f"weighted mean MRR {self.mrr:.3f} over the task mix {mix_sentence(self.tasks)}"
        if self.strategy is None:
            return f"Best model: `{self.model}`, {over}" + (f" (other models: {others})." if others else ".")
        return (
            f"Use model `{self.model}` with fusion `{self.strategy}`: {over}"
            + (f" (other fusions: {others})" if others else "")
            + f". CatalogSearch now fuses `{self.model}` results with `{self.strategy}` by default"
            " (each model with its own best fusion, recorded in the database's fusion_choices table)."
        )


def _mean_mrr(
    results: Sequence[TaskResult], fused: bool
) -> dict[tuple[str, str | None], tuple[float, tuple[str, ...]]]:
    """Mean MRR of each (model, strategy) over the tasks every pair has (its own tasks when they share none),
    weighted by evaluation.task_mix for fused search (the tasks with a weight, when any has one). Only
    results over all items count: the held-out and in-sample runs of a trained model are reported, not chosen on."""
    by_pair: defaultdict[tuple[str, str | None], dict[str, float]] = defaultdict(dict)
    for result in results:
        chosen_from = (
            (result.strategy is not None) == fused and result.strategy not in NOT_CHOSEN and result.subset is None
        )
        if chosen_from and result.metrics.mrr is not None:
            by_pair[(result.model, result.strategy)][result.task] = result.metrics.mrr
    if not by_pair:
        return {}
    common = set.intersection(*(set(tasks) for tasks in by_pair.values()))
    means = {}
    for pair, mrr in by_pair.items():
        tasks = tuple(sorted(common or mrr, key=task_order))
        if fused:
            tasks = tuple(task for task in tasks if task_weight(task) > 0) or tasks
            means[pair] = (weighted_mrr(mrr, tasks), tasks)
        else:
            means[pair] = (float(np.mean([mrr[task] for task in tasks])), tasks)
    return means


def best_fusion_per_model(results: Sequence[TaskResult]) -> dict[str, Recommendation]:
    """Each model's fusion strategy with the highest MRR averaged over the fused search tasks.

    Ties go to the strategy listed first in store.fusion.STRATEGIES. Empty when no fused
    search task was evaluated.
    """
    means = _mean_mrr(results, fused=True)
    best = {}
    for model in sorted({model for model, _ in means}):
        pairs = [pair for pair in means if pair[0] == model]
        chosen = min(pairs, key=lambda pair: (-means[pair][0], STRATEGIES.index(pair[1])))
        others = {strategy: means[(model, strategy)][0] for _, strategy in pairs if strategy != chosen[1]}
        best[model] = Recommendation(model, chosen[1], means[chosen][0], means[chosen][1], others)
    return best


def fusion_choices(results: Sequence[TaskResult]) -> dict[str, FusionChoice]:
    """Each model's best fusion, as CatalogSearch records and follows it (store.fusion_choices)."""
    return {
        model: FusionChoice(best.strategy, best.mrr, best.tasks)
        for model, best in best_fusion_per_model(results).items()
    }


def best_fusion(results: Sequence[TaskResult]) -> Recommendation | None:
    """The (model, fusion strategy) with the highest MRR averaged over the fused search tasks.

    Ties go to the strategy listed first in store.fusion.STRATEGIES, then to the
    model name. None when no fused search task was evaluated.
    """
    per_model = best_fusion_per_model(results)
    if not per_model:
        return None
    return min(per_model.values(), key=lambda best: (-best.mrr, STRATEGIES.index(best.strategy), best.model))


def best_model(results: Sequence[TaskResult]) -> Recommendation | None:
    """The model with the highest MRR averaged over the one-direction tasks (text_to_image, ...)."""
    means = _mean_mrr(results, fused=False)
    if not means:
        return None
    best = min(means, key=lambda pair: (-means[pair][0], pair[0]))
    others = {m: value for (m, _), (value, _) in means.items() if m != best[0]}
    return Recommendation(best[0], None, means[best][0], means[best][1], others)
