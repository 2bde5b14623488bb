"""The API over a catalog after product_clusters and product_tags: collapsed variants, a cluster's
variants by item id, and zero-shot facets as filters (their confidences and the cluster columns are not)."""

from __future__ import annotations

import lancedb
import pytest
import requests

from fashion_search_pipeline.store.tables import table_name
from fashion_search_pipeline_tests.service.conftest import CLUSTERS, MODEL, tag_facets
from fashion_search_pipeline_tests.service.conftest import VARIANTS_PRODUCTS as PRODUCTS

pytestmark = pytest.mark.slow


def search(service, **body) -> dict:
    answer = requests.post(f"{service.url}/v1/search", json={"text": "red dress", "k": 100, **body}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def cluster_of(item_id: str) -> set[str]:
    return next((members for members in CLUSTERS.values() if item_id in members), {item_id})


def test_a_collapsed_search_shows_one_product_per_cluster_and_counts_the_others(variants_service):
    collapsed = search(variants_service, collapse=True)["products"]
    assert len(collapsed) == PRODUCTS - sum(len(members) - 1 for members in CLUSTERS.values())
    shown = [product["item_id"] for product in collapsed]
    for members in CLUSTERS.values():
        (representative,) = [item_id for item_id in shown if item_id in members]
        assert next(p for p in collapsed if p["item_id"] == representative)["variants"] == len(members) - 1
    assert all(p["variants"] == 0 for p in collapsed if len(cluster_of(p["item_id"])) == 1)
    expanded = search(variants_service)["products"]
    assert len(expanded) == PRODUCTS and all(p["variants"] == 0 for p in expanded)
    assert [p["rank"] for p in collapsed] == list(range(1, len(collapsed) + 1))


@pytest.mark.parametrize("item_id", [item for members in CLUSTERS.values() for item in sorted(members)])
def test_an_items_variants_are_the_other_products_of_its_cluster(variants_service, item_id):
    answer = requests.get(f"{variants_service.url}/v1/items/{item_id}/variants", timeout=10)
    assert answer.status_code == 200
    variants = answer.json()["variants"]
    assert [v["item_id"] for v in variants] == sorted(cluster_of(item_id) - {item_id})
    assert all(v["thumbnail_url"] == f"/v1/items/{v['item_id']}/image" and v["attributes"]["colour"] for v in variants)


def test_an_item_without_variants_has_none_and_an_unknown_item_is_404(variants_service):
    assert requests.get(f"{variants_service.url}/v1/items/cap-red-1/variants", timeout=10).json()["variants"] == []
    assert requests.get(f"{variants_service.url}/v1/items/no-such-item/variants", timeout=10).status_code == 404


def test_zero_shot_facets_are_attributes_and_filters_but_their_confidences_and_cluster_ids_are_not(
    variants_service, variants_home
):
    facets = requests.get(f"{variants_service.url}/v1/facets", timeout=10).json()["facets"]
    assert {"pattern", "sleeve"} <= set(facets)
    assert not [name for name in facets if name.endswith("_confidence") or name.startswith("cluster")]
    product = search(variants_service)["products"][0]
    assert "pattern" in product["attributes"] and all(isinstance(v, str) for v in product["attributes"].values())
    assert not {"pattern_confidence", "cluster_id", "cluster_size"} & set(product["attributes"])

    name, values = next(iter(tag_facets(variants_service.url).items()))
    value = values[-1]["value"]
    rows = lancedb.connect(variants_home / "lancedb").open_table(table_name(MODEL, "image")).to_arrow().to_pylist()
    tagged = {row["item_id"] for row in rows if row[name] == value}
    found = search(variants_service, filters={name: value})["products"]
    assert {p["item_id"] for p in found} == tagged and all(p["attributes"][name] == value for p in found)

    wrong = requests.post(f"{variants_service.url}/v1/search", timeout=10,
                          json={"text": "dress", "filters": {"pattern_confidence": "0.5"}})
    assert wrong.status_code == 422 and "pattern_confidence" not in wrong.json()["attributes"]
