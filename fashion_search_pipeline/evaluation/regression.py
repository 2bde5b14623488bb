"""Metric drops between two evaluations (rows as report.metric_rows writes them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

COMPARED_METRICS = ("mrr", "recall@1", "recall@5", "recall@10", "ndcg@10")
ROW_KEY = ("model", "task", "strategy", "subset")


@dataclass(frozen=True)
class MetricDrop:
    """A metric that fell by more than the allowed margin."""

    model: str
    task: str
    strategy: str | None
    metric: str
    previous: float
    current: float
    subset: str | None = None

    def describe(self) -> str:
        """One line: where, which metric, from what to what."""
        where = "/".join(part for part in (self.model, self.subset, self.task, self.strategy) if part)
        return f"{where} {self.metric}: {self.previous:.4f} -> {self.current:.4f} ({self.current - self.previous:+.4f})"


def metric_drops(
    current: Iterable[Mapping], previous: Iterable[Mapping], margin: float
) -> list[MetricDrop]:
    """Metrics of rows present in both evaluations that dropped by more than `margin` (absolute).

    Rows are matched on (model, task, strategy, subset); missing or null values are not compared.
    """
    if margin < 0:
        raise ValueError(f"margin must be non-negative, got {margin}")
    before = {tuple(row.get(key) for key in ROW_KEY): row for row in previous}
    drops = []
    for row in current:
        old = before.get(tuple(row.get(key) for key in ROW_KEY))
        if old is None:
            continue
        for metric in COMPARED_METRICS:
            now, then = row.get(metric), old.get(metric)
            if now is not None and then is not None and then - now > margin:
                drops.append(MetricDrop(row["model"], row["task"], row.get("strategy"), metric, then, now, row.get("subset")))
    return drops
