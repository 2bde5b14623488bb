"""Column names shared by the catalog, the embedding tables and the search API.

Attribute columns (gender, colour, ...) are not listed here: they are every
column of a catalog table that is not one of these, stored as strings.
"""

ITEM_ID = "item_id"
DROP_ID = "drop_id"
SOURCE_ROW = "source_row"
IMAGE_PATH = "image_path"
IMAGE_URI = "image_uri"
DESCRIPTION = "description"
IMAGE_SHA256 = "image_sha256"
CONTENT_HASH = "content_hash"

# cleaned_captions keeps every caption row; rejected ones carry their reason.
STATUS = "status"
ACCEPTED = "accepted"
REJECTED = "rejected"
REJECT_REASON = "reject_reason"
REJECT_DETAIL = "reject_detail"

# raw_captions: why a CSV record could not be read as a row (null when it could).
PARSE_ERROR = "parse_error"

# Embedding tables (ATTRIBUTES holds the attribute columns as one JSON object, for display).
ATTRIBUTES = "attributes"
MODEL = "model"
MODEL_VERSION = "model_version"
VECTOR = "vector"
# The keyword leg's text: description and text attributes in one full-text-indexed column.
KEYWORD_TEXT = "keyword_text"

# Search results.
SCORE = "score"
MATCHED = "matched"
RANK = "rank"

CATALOG_COLUMNS = (
    ITEM_ID,
    DROP_ID,
    SOURCE_ROW,
    IMAGE_PATH,
    IMAGE_URI,
    DESCRIPTION,
    IMAGE_SHA256,
    CONTENT_HASH,
)
CLEANING_COLUMNS = (STATUS, REJECT_REASON, REJECT_DETAIL)
EMBEDDING_COLUMNS = (
    ITEM_ID,
    DROP_ID,
    IMAGE_URI,
    DESCRIPTION,
    CONTENT_HASH,
    MODEL,
    MODEL_VERSION,
    KEYWORD_TEXT,
    VECTOR,
)
# Columns LanceDB adds to search results (vector, full-text, hybrid) and row addressing: a table
# column of the same name makes every search on it fail with a duplicate column.
LANCEDB_RESULT_COLUMNS = ("_distance", "_score", "_relevance_score", "_rowid", "_rowaddr")
RESERVED_COLUMNS = frozenset(
    CATALOG_COLUMNS
    + CLEANING_COLUMNS
    + EMBEDDING_COLUMNS
    + LANCEDB_RESULT_COLUMNS
    + (ATTRIBUTES, PARSE_ERROR, SCORE, MATCHED, RANK)
)

MODALITIES = ("image", "text")


def attribute_columns(columns) -> list[str]:
    """The product-attribute columns among `columns`, in their given order."""
    return [c for c in columns if c not in RESERVED_COLUMNS]
