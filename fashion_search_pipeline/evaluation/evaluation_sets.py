"""Evaluation sets: queries, each with the catalog item ids relevant to it."""

from __future__ import annotations

import csv
import io
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import polars as pl

from fashion_search_pipeline.columns import DESCRIPTION, ITEM_ID

# Reasons a query is left out of an evaluation set (keys of EvaluationSet.skipped_reasons).
EMPTY_QUERY = "empty_query"
MISSING_ITEM_ID = "missing_item_id"
UNKNOWN_ITEM = "unknown_item"
MALFORMED_RECORD = "malformed_record"
NOT_UTF8 = "not_utf8"


@dataclass
class EvaluationSet:
    """Queries (texts, or image item ids) and, per query, the set of relevant item ids.

    `skipped` counts the source records that did not become queries;
    `skipped_reasons` breaks that count down by reason.
    """

    name: str
    queries: list[str]
    relevant: list[set[str]]
    skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.queries) != len(self.relevant):
            raise ValueError(
                f"evaluation set {self.name!r}: {len(self.queries)} queries "
                f"but {len(self.relevant)} relevance sets"
            )

    def __len__(self) -> int:
        return len(self.queries)

    def relevant_indices(self, candidate_ids: Sequence[str]) -> list[set[int]]:
        """Each query's relevant items as positions in `candidate_ids` (the scored columns).

        Relevant items that are not candidates are dropped; a query left with
        none is then skipped by compute_metrics.
        """
        position = {item_id: i for i, item_id in enumerate(candidate_ids)}
        if len(position) != len(candidate_ids):
            repeated = sorted(i for i, c in Counter(candidate_ids).items() if c > 1)
            raise ValueError(f"candidate ids repeat: {repeated[:5]}")
        return [{position[i] for i in items if i in position} for items in self.relevant]


def catalog_text_to_image(catalog: pl.DataFrame, name: str = "catalog_text_to_image") -> EvaluationSet:
    """Every item's description as a text query for the catalog's items.

    The item itself is relevant, and so is every other item with the same
    normalised description (Unicode NFKC, case-folded, whitespace collapsed):
    CLIP's tokenizer lower-cases and collapses whitespace, so such queries are
    indistinguishable. Rows without an item id or with a blank description are
    skipped and counted.
    """
    for column in (ITEM_ID, DESCRIPTION):
        if column not in catalog.columns:
            raise ValueError(f"catalog has no {column!r} column (columns: {catalog.columns})")
    item_ids = catalog.get_column(ITEM_ID).to_list()
    descriptions = catalog.get_column(DESCRIPTION).to_list()

    reasons: Counter[str] = Counter()
    rows: list[tuple[str, str, str]] = []
    for item_id, description in zip(item_ids, descriptions):
        if item_id is None or not item_id.strip():
            reasons[MISSING_ITEM_ID] += 1
        elif description is None or not description.strip():
            reasons[EMPTY_QUERY] += 1
        else:
            rows.append((item_id, description, _query_key(description)))
    repeated = sorted(i for i, c in Counter(item_id for item_id, _, _ in rows).items() if c > 1)
    if repeated:
        raise ValueError(f"catalog item ids repeat: {repeated[:5]}")

    items_by_key: defaultdict[str, set[str]] = defaultdict(set)
    for item_id, _, key in rows:
        items_by_key[key].add(item_id)
    return EvaluationSet(
        name=name,
        queries=[description for _, description, _ in rows],
        relevant=[set(items_by_key[key]) for _, _, key in rows],
        skipped=sum(reasons.values()),
        skipped_reasons=dict(reasons),
    )


def _query_key(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def image_file_stem(image: str) -> str:
    """The image file name without folders or extension ("images/123.jpg" -> "123")."""
    return PurePosixPath(image.replace("\\", "/")).stem


def captions_file_set(
    data: bytes,
    known_item_ids: Collection[str],
    *,
    image_column: str = "image",
    caption_column: str = "caption",
    id_from_image: Callable[[str], str] = image_file_stem,
    name: str = "captions",
) -> EvaluationSet:
    """Caption queries from a comma-delimited CSV of image,caption rows (several per image).

    Each caption is a query whose one relevant item is `id_from_image(image)`.
    Records are skipped and counted, never fatal, when the record has the wrong
    field count, its bytes are not UTF-8, the image or caption is blank, or the
    image's id is not among `known_item_ids`. A missing header or column raises ValueError.
    """
    text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise ValueError(f"captions file {name!r} is empty: expected a header row")
    columns = [column.strip().lower() for column in header]
    for column in (image_column, caption_column):
        if column.lower() not in columns:
            raise ValueError(f"captions file {name!r} has no {column!r} column (header: {header})")
    image_at = columns.index(image_column.lower())
    caption_at = columns.index(caption_column.lower())

    known = set(known_item_ids)
    reasons: Counter[str] = Counter()
    queries: list[str] = []
    relevant: list[set[str]] = []
    for record in complete_records(reader, len(header), reasons):
        if not all(_is_utf8(value) for value in record):
            reasons[NOT_UTF8] += 1
        elif not record[image_at].strip():
            reasons[MISSING_ITEM_ID] += 1
        elif not record[caption_at].strip():
            reasons[EMPTY_QUERY] += 1
        elif (item_id := id_from_image(record[image_at].strip())) not in known:
            reasons[UNKNOWN_ITEM] += 1
        else:
            queries.append(record[caption_at].strip())
            relevant.append({item_id})
    return EvaluationSet(
        name=name,
        queries=queries,
        relevant=relevant,
        skipped=sum(reasons.values()),
        skipped_reasons=dict(reasons),
    )


def complete_records(reader: Iterator[list[str]], width: int, reasons: Counter[str]) -> Iterator[list[str]]:
    """The CSV records with `width` fields; blank ones are passed over, the others counted as MALFORMED_RECORD."""
    for record in reader:
        if not record:
            continue
        if len(record) != width:
            reasons[MALFORMED_RECORD] += 1
            continue
        yield record


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
