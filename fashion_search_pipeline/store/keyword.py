"""The keyword leg of search: BM25 full-text search (LanceDB FTS) over description and attribute text.

The text is one column, `keyword_text`: the description and every text attribute (zero-shot tags
included), joined by spaces and full-text indexed. One match query over one indexed column took 8
ms at a million rows where a multi-column match over description and three attribute columns took
88–163 ms (docs/performance.md). Tables written before the column existed are searched with the
multi-column match until their next embeddings run fills it.

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
import pyarrow as pa

from fashion_search_pipeline.columns import DESCRIPTION, ITEM_ID, KEYWORD_TEXT, SCORE
from fashion_search_pipeline.store.tables import is_attribute_column, retry_commit_conflicts

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


def keyword_texts(frame: pl.DataFrame) -> list[str | None]:
    """Each row's keyword text: its description and text attribute values, space-separated
    (nulls and blanks left out); None when none has a value."""
    columns = keyword_columns(frame.columns, [("string" if dtype == pl.Utf8 else str(dtype)) for dtype in frame.dtypes])
    if not columns:
        return [None] * frame.height
    joined = pl.concat_str([pl.col(c).str.strip_chars() for c in columns], separator=" ", ignore_nulls=True)
    texts = frame.select(joined.str.replace_all(r"\s+", " ").str.strip_chars().alias(KEYWORD_TEXT))[KEYWORD_TEXT]
    return [text or None for text in texts.to_list()]


def fill_keyword_text(table: Table) -> int:
    """Compute keyword_text where it is null (rows of writers that leave it out, or of a table from
    before the column); the caller holds the table's write lock. Returns the rows filled."""
    if KEYWORD_TEXT not in table.schema.names:
        return 0
    names = [ITEM_ID, *table_keyword_columns(table)]
    missing = pl.from_arrow(table.search().where(f"{KEYWORD_TEXT} IS NULL").select(names).limit(None).to_arrow())
    texts = keyword_texts(missing.select(names[1:])) if missing.height else []
    filled = missing.select(ITEM_ID).with_columns(pl.Series(KEYWORD_TEXT, texts, dtype=pl.Utf8)).drop_nulls(KEYWORD_TEXT)
    if filled.height == 0:
        return 0
    rows = filled.to_arrow().cast(pa.schema([table.schema.field(ITEM_ID), table.schema.field(KEYWORD_TEXT)]))
    retry_commit_conflicts(lambda: table.merge_insert(ITEM_ID).when_matched_update_all().execute(rows))
    return filled.height


def keyword_text_indexed(table: Table) -> bool:
    """Whether the table's keyword_text column has its full-text index (else: the multi-column match)."""
    return KEYWORD_TEXT in table.schema.names and any(
        list(index.columns) == [KEYWORD_TEXT] for index in table.list_indices()
    )


def keyword_search(
    table: Table,
    query: str,
    limit: int,
    *,
    where: str | None = None,
    select: Sequence[str] | None = None,
) -> pl.DataFrame:
    """The `limit` best BM25 matches of `query`: item_id, the `select` columns, score.

    Empty (with those columns) when the query has no searchable term. `where` is the same SQL
    filter the vector legs take, applied before ranking.
    """
    from lancedb.query import MatchQuery, MultiMatchQuery
    wanted = list(dict.fromkeys([ITEM_ID, *(select or [])]))
    empty = pl.DataFrame(schema={**{name: pl.Utf8 for name in wanted}, SCORE: pl.Float64})
    terms = keyword_terms(query)
    if terms is None:
        return empty
    if keyword_text_indexed(table):
        match = MatchQuery(terms, KEYWORD_TEXT)
    else:
        searched = table_keyword_columns(table)
        if not searched:
            return empty
        match = MultiMatchQuery(terms, searched)
    search = table.search(match, query_type="fts").select([*wanted, FTS_SCORE_COLUMN]).limit(limit)
    if where:
        search = search.where(where, prefilter=True)
    hits = pl.from_arrow(search.to_arrow())
    if hits.height == 0:
        return empty
    return hits.rename({FTS_SCORE_COLUMN: SCORE}).with_columns(pl.col(SCORE).cast(pl.Float64))
