"""Shopper-style text queries generated from catalog attributes, with relevance from attributes.

Shoppers do not type product names ("Puma Men Ferrari Black Fleece Jacket"); they type
"black jacket for men", "puma sneakers", "joggers". Each query here combines a product-type
phrase (a synonym or paraphrase of the article type: "trainers" for Sports Shoes, "tee" for
Tshirts), and optionally a colour, a brand word (the first word of descriptions shared by several
items) and a gender phrasing. An item is relevant when its attributes match every part of the
query (a Unisex item counts for men's and women's queries). No query equals a description.

A shop's own judgments can be added from a CSV file (read_judged_queries).
"""

from __future__ import annotations

import csv
import io
import random
import unicodedata
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass

import polars as pl

from fashion_search_pipeline.columns import DESCRIPTION, ITEM_ID
from fashion_search_pipeline.evaluation.evaluation_sets import (
    EMPTY_QUERY,
    MALFORMED_RECORD,
    UNKNOWN_ITEM,
    EvaluationSet,
    complete_records,
)

SHOPPER_SEARCH = "shopper_search"
JUDGED_SEARCH = "judged_search"
ARTICLE_TYPE, COLOUR, GENDER = "article_type", "colour", "gender"

# Query kinds, from the broadest to the most specific.
KINDS = ("type", "colour_type", "type_gender", "brand_type", "colour_type_gender", "brand_colour_type")
DEFAULT_QUERIES_PER_KIND = 50
MIN_BRAND_ITEMS = 3
# What shoppers call each article type (the first phrase is the plain one).
TYPE_PHRASES = {
    "Tshirts": ("t-shirt", "tee", "tshirt", "t shirt"),
    "Casual Shoes": ("sneakers", "casual shoes", "canvas shoes"),
    "Sports Shoes": ("running shoes", "trainers", "sports shoes", "sneakers for running"),
    "Shirts": ("shirt", "button down shirt", "collared shirt"),
    "Heels": ("heels", "high heels", "heeled sandals"),
    "Backpacks": ("backpack", "travel backpack", "rucksack", "school bag"),
    "Tops": ("top", "blouse", "casual top"),
    "Handbags": ("handbag", "purse", "shoulder bag"),
    "Track Pants": ("track pants", "joggers", "sweatpants"),
    "Sandals": ("sandals", "open toe sandals"),
    "Shorts": ("shorts", "short pants"),
    "Formal Shoes": ("formal shoes", "office shoes", "leather shoes"),
    "Flip Flops": ("flip flops", "slippers", "beach slippers"),
    "Flats": ("flats", "ballet flats", "flat shoes"),
    "Caps": ("cap", "baseball cap", "hat"),
    "Jackets": ("jacket", "windcheater", "zip jacket"),
    "Dresses": ("dress", "one piece dress"),
    "Water Bottle": ("water bottle", "sipper bottle"),
    "Swimwear": ("swimsuit", "swimwear"),
    "Footballs": ("football", "soccer ball"),
    "Capris": ("capris", "three quarter pants"),
    "Sweatshirts": ("sweatshirt", "pullover"),
    "Socks": ("socks", "ankle socks"),
    "Basketballs": ("basketball", "basket ball"),
    "Trousers": ("trousers", "pants"),
}
GENDER_PHRASES = {
    "Men": ("for men", "men's", "mens"),
    "Women": ("for women", "women's", "ladies"),
    "Boys": ("for boys", "boys"),
    "Girls": ("for girls", "girls"),
}
# Gender values a query for the key also finds.
GENDER_MATCHES = {"Men": {"Men", "Unisex"}, "Women": {"Women", "Unisex"}, "Boys": {"Boys"}, "Girls": {"Girls"}}
COLOUR_PHRASES = {"Navy Blue": "navy", "Multi": "multicolour"}


@dataclass(frozen=True)
class ShopperQuery:
    """One generated query, its kind and the attribute values it asks for."""

    text: str
    kind: str
    article_type: str
    colour: str | None = None
    gender: str | None = None
    brand: str | None = None


def brand_words(items: pl.DataFrame, *, min_items: int = MIN_BRAND_ITEMS) -> dict[str, str]:
    """item_id -> brand: the first word of its description, when at least `min_items` items share
    it and it is not a colour, gender or type word."""
    common = _vocabulary(items)
    first = {
        item_id: _key(description).split(" ")[0]
        for item_id, description in zip(items[ITEM_ID], items[DESCRIPTION].fill_null(""))
        if _key(description)
    }
    counts = Counter(first.values())
    return {
        item_id: word for item_id, word in first.items()
        if counts[word] >= min_items and word not in common and word.isalpha()
    }


def shopper_queries(
    items: pl.DataFrame, *, per_kind: int = DEFAULT_QUERIES_PER_KIND, seed: int = 0
) -> tuple[EvaluationSet, list[str]]:
    """Generated shopper queries over `items` (item_id, description, article_type, colour,
    gender) and each query's kind; at most `per_kind` queries of each kind (a seeded sample)."""
    missing = [column for column in (ITEM_ID, DESCRIPTION, ARTICLE_TYPE) if column not in items.columns]
    if missing:
        raise ValueError(f"shopper queries need the columns {missing} (columns: {items.columns})")
    rng = random.Random(seed)
    brands = brand_words(items)
    rows = items.select(
        ITEM_ID,
        DESCRIPTION,
        *[pl.col(c).fill_null("").str.strip_chars().alias(c) if c in items.columns else pl.lit("").alias(c)
          for c in (ARTICLE_TYPE, COLOUR, GENDER)],
    ).to_dicts()
    descriptions = {_key(row[DESCRIPTION] or "") for row in rows}
    wanted: dict[str, dict[tuple, None]] = {kind: {} for kind in KINDS}
    for row in rows:
        if not row[ARTICLE_TYPE]:
            continue
        gender = row[GENDER] if row[GENDER] in GENDER_PHRASES else None
        colour = row[COLOUR] or None
        brand = brands.get(row[ITEM_ID])
        parts = {"type": (row[ARTICLE_TYPE], None, None, None)}
        if colour:
            parts["colour_type"] = (row[ARTICLE_TYPE], colour, None, None)
        if gender:
            parts["type_gender"] = (row[ARTICLE_TYPE], None, gender, None)
        if brand:
            parts["brand_type"] = (row[ARTICLE_TYPE], None, None, brand)
        if colour and gender:
            parts["colour_type_gender"] = (row[ARTICLE_TYPE], colour, gender, None)
        if brand and colour:
            parts["brand_colour_type"] = (row[ARTICLE_TYPE], colour, None, brand)
        for kind, key in parts.items():
            wanted[kind][key] = None
    queries: list[ShopperQuery] = []
    for kind in KINDS:
        keys = sorted(wanted[kind], key=lambda key: tuple(value or "" for value in key))
        for key in rng.sample(keys, min(per_kind, len(keys))):
            query = _phrase(kind, *key, rng)
            if _key(query.text) not in descriptions:
                descriptions.add(_key(query.text))  # and never twice
                queries.append(query)
    relevant = [_relevant(query, rows, brands) for query in queries]
    evaluation_set = EvaluationSet(SHOPPER_SEARCH, [query.text for query in queries], relevant)
    return evaluation_set, [query.kind for query in queries]


def _phrase(kind: str, article_type: str, colour: str | None, gender: str | None, brand: str | None,
            rng: random.Random) -> ShopperQuery:
    type_phrase = rng.choice(TYPE_PHRASES.get(article_type, (article_type.lower(),)))
    words = [brand, COLOUR_PHRASES.get(colour, colour.lower()) if colour else None, type_phrase]
    text = " ".join(word for word in words if word)
    if gender:
        gender_phrase = rng.choice(GENDER_PHRASES[gender])
        text = f"{text} {gender_phrase}" if gender_phrase.startswith("for ") else f"{gender_phrase} {text}"
    return ShopperQuery(text, kind, article_type, colour, gender, brand)


def _relevant(query: ShopperQuery, rows: list[dict], brands: dict[str, str]) -> set[str]:
    return {
        row[ITEM_ID] for row in rows
        if row[ARTICLE_TYPE] == query.article_type
        and (query.colour is None or row[COLOUR] == query.colour)
        and (query.gender is None or row[GENDER] in GENDER_MATCHES[query.gender])
        and (query.brand is None or brands.get(row[ITEM_ID]) == query.brand)
    }


def _vocabulary(items: pl.DataFrame) -> set[str]:
    """Words of colours, genders and type phrases: never brand words."""
    words = {word for phrases in TYPE_PHRASES.values() for phrase in phrases for word in phrase.split()}
    for column in (COLOUR, GENDER, ARTICLE_TYPE):
        if column in items.columns:
            words |= {word for value in items[column].drop_nulls().unique() for word in _key(value).split()}
    return words


def _key(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def read_judged_queries(
    data: bytes, items: pl.DataFrame, *, name: str = "judged queries"
) -> EvaluationSet:
    """A shop's own judged queries: a comma-delimited CSV with a `query` column and either
    `relevant_item_ids` (ids separated by `|`) or `attributes` (`column=value;column=value`,
    every item whose attributes match is relevant), or both (their union).

    Rows without a query, with unknown ids only, naming an unknown column, or with the wrong
    field count are skipped and counted; a file without a `query` column raises ValueError.
    """
    text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [column.strip().lower() for column in next(reader, [])]
    if "query" not in header or not {"relevant_item_ids", "attributes"} & set(header):
        raise ValueError(
            f"{name}: needs a 'query' column and 'relevant_item_ids' or 'attributes' (header: {header})"
        )
    known = set(items[ITEM_ID].to_list())
    reasons: Counter[str] = Counter()
    queries: list[str] = []
    relevant: list[set[str]] = []
    for record in complete_records(reader, len(header), reasons):
        row = dict(zip(header, record))
        query = row["query"].strip()
        matches = _judged_relevant(row, items, known)
        if not query:
            reasons[EMPTY_QUERY] += 1
        elif matches is None:
            reasons[MALFORMED_RECORD] += 1
        elif not matches:
            reasons[UNKNOWN_ITEM] += 1
        else:
            queries.append(query)
            relevant.append(matches)
    return EvaluationSet(JUDGED_SEARCH, queries, relevant, sum(reasons.values()), dict(reasons))


def _judged_relevant(row: dict, items: pl.DataFrame, known: Collection[str]) -> set[str] | None:
    """The row's relevant ids; None when its attribute constraints are malformed or unknown."""
    ids = {item.strip() for item in row.get("relevant_item_ids", "").split("|") if item.strip() in known}
    constraints = [part for part in row.get("attributes", "").split(";") if part.strip()]
    if not constraints:
        return ids
    selected = items
    for constraint in constraints:
        column, equals, value = constraint.partition("=")
        column = column.strip()
        if not equals or column not in items.columns or column in (ITEM_ID, DESCRIPTION):
            return None
        selected = selected.filter(pl.col(column).str.strip_chars() == value.strip())
    return ids | set(selected[ITEM_ID].to_list())

