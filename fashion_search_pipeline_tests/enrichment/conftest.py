"""The defs fixtures (a tiny random-weight model registry) for the enrichment assets' tests."""

from fashion_search_pipeline_tests.defs.conftest import tiny_registry  # noqa: F401
