"""A drop materialized while the service runs becomes searchable without a restart."""

from __future__ import annotations

import time

import requests

from fashion_search_pipeline.demo_catalog import DemoItem
from fashion_search_pipeline_tests.service.conftest import DROP_ID, materialize_in, write_catalog_drop

NEW_DROP = "svc-002"
NEW_ITEMS = [
    DemoItem("cap-purple-9", "Kestrel Unisex Purple Corduroy Cap", "Unisex", "Cap", "Red"),
    DemoItem("dress-teal-9", "Mira Women Teal Pleated Midi Dress", "Women", "Dress", "Green"),
]
# CatalogSearch's read-consistency interval is 5 s; allow for one automation-free refresh on top.
FRESH_WITHIN_S = 20


def test_a_new_drop_is_searchable_within_the_read_consistency_interval(service, service_home):
    url = f"{service.url}/v1/search"
    query = {"text": NEW_ITEMS[1].description, "k": 1, "fusion": "text"}
    assert requests.post(url, json=query, timeout=30).json()["products"][0]["item_id"] != NEW_ITEMS[1].item_id
    write_catalog_drop(service_home / "landing" / "drops" / NEW_DROP, NEW_ITEMS, ["new", "new"], seed=11)
    materialize_in(service_home, [DROP_ID, NEW_DROP])
    written = time.monotonic()
    while True:
        answer = requests.post(url, json=query, timeout=30).json()
        if answer["products"][0]["item_id"] == NEW_ITEMS[1].item_id:
            break
        assert time.monotonic() - written < FRESH_WITHIN_S, "the new drop's item was not found without a restart"
        time.sleep(0.5)
    facets = requests.get(f"{service.url}/v1/facets", timeout=10).json()["facets"]
    assert {"value": "new", "count": 2} in facets["label"]
    item = requests.get(f"{service.url}/v1/items/{NEW_ITEMS[0].item_id}", timeout=10)
    assert item.status_code == 200 and item.json()["drop_id"] == NEW_DROP
