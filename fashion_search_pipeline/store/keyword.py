"""The keyword leg of search: BM25 full-text search (LanceDB FTS) over description and attribute text.

A shopper's words are reduced to plain terms before they reach the full-text engine, so
characters its query parser treats as syntax (`"`, `:`, `*`, `(`, `-`) are only separators and
never an error. A query with no term left (only punctuation, or only stop words) has no keyword
leg: search falls back to the vector legs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import polars as pl

from fashion_search_pipeline.columns import DESCRIPTION, ITEM_ID, SCORE
from fashion_search_pipeline.store.tables import is_attribute_column

if TYPE_CHECKING:
    from lancedb.table import Table

KEYWORD = "keyword"
# The column LanceDB adds to full-text search results (BM25, higher is better).
FTS_SCORE_COLUMN = "_score"
# Terms longer than LanceDB's default max_token_length are never indexed.
MAX_TERM_LENGTH = 40
MAX_TERMS = 32
# English stop words, dropped here so a query of only these has no keyword leg (the index drops
# them too: they would match nothing).
STOP_WORDS = frozenset(
    """a an and are as at be but by for from has have in into is it its of on or that the their this
    to with without i me my we our you your he she they them his her what which who whom want need
    looking some any very""".split()
)
_TERM = re.compile(r"\w+", re.UNICODE)


def keyword_terms(query: str) -> str | None:
    """The query's searchable terms, lower-cased and space-separated; None when none is left."""
    terms = [
        term for term in _TERM.findall(query.casefold().replace("_", " "))
        if term not in STOP_WORDS and len(term) <= MAX_TERM_LENGTH
    ]
    return " ".join(terms[:MAX_TERMS]) or None


def keyword_columns(column_names: Sequence[str], types: Sequence | None = None) -> list[str]:
    """The text columns the keyword leg searches: description, then every attribute column."""
    names = list(column_names)
    kinds = list(types) if types is not None else [None] * len(names)
    text = [name for name, kind in zip(names, kinds) if kind is None or str(kind) in ("string", "large_string")]
    return ([DESCRIPTION] if DESCRIPTION in text else []) + [name for name in text if is_attribute_column(name)]


def table_keyword_columns(table: Table) -> list[str]:
    """keyword_columns of a LanceDB table's schema."""
    return keyword_columns(table.schema.names, [field.type for field in table.schema])


def keyword_search(
    table: Table,
    query: str,
    limit: int,
    *,
    where: str | None = None,
    columns: Sequence[str] | None = None,
    select: Sequence[str] | None = None,
) -> pl.DataFrame:
    """The `limit` best BM25 matches of `query`: item_id, the `select` columns, score.

    Empty (with those columns) when the query has no searchable term. `where` is the same SQL
    filter the vector legs take, applied before ranking.
    """
    from lancedb.query import MultiMatchQuery
    wanted = list(dict.fromkeys([ITEM_ID, *(select or [])]))
    empty = pl.DataFrame(schema={**{name: pl.Utf8 for name in wanted}, SCORE: pl.Float64})
    terms = keyword_terms(query)
    searched = list(columns) if columns is not None else table_keyword_columns(table)
    if terms is None or not searched:
        return empty
    search = (
        table.search(MultiMatchQuery(terms, searched), query_type="fts")
        .select([*wanted, FTS_SCORE_COLUMN])
        .limit(limit)
    )
    if where:
        search = search.where(where, prefilter=True)
    hits = pl.from_arrow(search.to_arrow())
    if hits.height == 0:
        return empty
    return hits.rename({FTS_SCORE_COLUMN: SCORE}).with_columns(pl.col(SCORE).cast(pl.Float64))
