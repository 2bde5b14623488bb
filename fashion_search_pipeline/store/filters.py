"""Shopper filters ({attribute: value or [values]}) as a LanceDB `where` expression that treats values as data.

A filter names attribute columns of the embedding tables (gender, colour, ...) and the values an
item's attribute must equal; several attributes must all match, several values of one attribute
are alternatives. The result is a typed `lancedb.expr.Expr` (column references and bound
literals), never SQL text put together from the input, so a value such as `' OR 1=1 --` only
ever matches items whose attribute is exactly that string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lancedb.expr import Expr, col

MAX_ATTRIBUTES = 16
MAX_VALUES_PER_ATTRIBUTE = 64
MAX_VALUE_CHARS = 200


class FilterError(ValueError):
    """A filter that cannot be applied: the message says what is wrong and what is allowed."""


class UnknownFilterAttributeError(FilterError):
    """A filter names an attribute the tables do not have."""

    def __init__(self, unknown: Sequence[str], attributes: Sequence[str]):
        self.unknown = sorted(unknown)
        self.attributes = sorted(attributes)
        super().__init__(f"unknown filter attribute(s) {self.unknown}; filterable attributes: {self.attributes}")


def filter_expression(filters: Mapping[str, object] | None, attributes: Sequence[str]) -> Expr | None:
    """The `where` expression for `filters` over the given attribute columns; None for no filter.

    Each value is a string or a non-empty list of strings (at most MAX_VALUES_PER_ATTRIBUTE,
    each at most MAX_VALUE_CHARS characters). Attribute names must be among `attributes`.
    """
    if not filters:
        return None
    if not isinstance(filters, Mapping):
        raise FilterError(f"filters must be an object of attribute -> value or [values], got {type(filters).__name__}")
    if len(filters) > MAX_ATTRIBUTES:
        raise FilterError(f"at most {MAX_ATTRIBUTES} filter attributes, got {len(filters)}")
    unknown = [name for name in filters if name not in attributes]
    if unknown:
        raise UnknownFilterAttributeError(unknown, attributes)
    clauses = [_attribute_clause(name, _values(name, value)) for name, value in sorted(filters.items())]
    combined = clauses[0]
    for clause in clauses[1:]:
        combined = combined & clause
    return combined


def _values(name: str, value: object) -> list[str]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise FilterError(f"filter {name!r} has an empty list of values")
    if len(values) > MAX_VALUES_PER_ATTRIBUTE:
        raise FilterError(f"filter {name!r} has {len(values)} values; at most {MAX_VALUES_PER_ATTRIBUTE}")
    for item in values:
        if not isinstance(item, str):
            raise FilterError(f"filter {name!r} values must be strings, got {type(item).__name__}")
        if len(item) > MAX_VALUE_CHARS:
            raise FilterError(f"filter {name!r} has a value of {len(item)} characters; at most {MAX_VALUE_CHARS}")
    return sorted(set(values))


def _attribute_clause(name: str, values: list[str]) -> Expr:
    column = col(name)
    return column == values[0] if len(values) == 1 else column.isin(values)
