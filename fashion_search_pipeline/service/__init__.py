"""The search service: an HTTP API under /v1 and a search page for shoppers, over CatalogSearch."""
