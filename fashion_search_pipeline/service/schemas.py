"""The request and response bodies of the /v1 API (their JSON schemas are on the /docs page)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_TEXT_CHARS = 1000
MAX_K = 100
DEFAULT_K = 24
MAX_OFFSET = 1000


class SearchOptions(BaseModel):
    """What every search takes besides the query itself."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, max_length=100, description="registry model; default: the first with tables")
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K, description="products per page")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="products to skip (paging)")
    filters: dict[str, str | list[str]] = Field(
        default_factory=dict, description="attribute -> value or [values]; attributes AND, values OR; literal match"
    )
    fusion: str | None = Field(None, max_length=40, description="image/text fusion strategy; default: the model's")
    collapse: bool = Field(False, description="one product per variant cluster (see product_clusters)")


class SearchRequest(SearchOptions):
    """Exactly one of text, image (base64) or item_id ("more like this")."""

    text: str | None = Field(None, max_length=MAX_TEXT_CHARS, description="what the shopper typed")
    image: str | None = Field(None, description="a query photo, base64 (JPEG, PNG, WebP, ...)")
    item_id: str | None = Field(None, max_length=256, description="find products like this catalog item")

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        given = [name for name in ("text", "image", "item_id") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of text, image or item_id (got {given or 'none'})")
        if self.text is not None and not self.text.strip():
            raise ValueError("text must not be empty")
        return self


class Product(BaseModel):
    """One product of the answer."""

    item_id: str
    description: str | None
    attributes: dict[str, str]
    score: float = Field(description="fused similarity, higher is closer")
    matched: str = Field(description="the tables that returned it: image, text or image+text")
    rank: int
    thumbnail_url: str
    variants: int = Field(0, description="other products of its variant cluster (with collapse)")


class SearchResponse(BaseModel):
    """Products for one page, how they were found, and where the time went."""

    model_config = ConfigDict(protected_namespaces=())

    products: list[Product]
    model: str
    model_version: str
    fusion: str
    k: int
    offset: int
    has_more: bool
    timings_ms: dict[str, float] = Field(
        description="milliseconds per stage: decode, encode, search_<table>, fusion, total"
    )
