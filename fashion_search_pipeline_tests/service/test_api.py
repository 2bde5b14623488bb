"""The /v1 API of a real `fashion-search serve` over tables the pipeline materialized."""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from pathlib import Path

import lancedb
import pytest
import requests
from PIL import Image

from fashion_search_pipeline.demo_catalog import demo_items
from fashion_search_pipeline.store.fusion import DEFAULT_STRATEGY
from fashion_search_pipeline_tests.service.conftest import (
    ALLOWED_ORIGIN,
    DROP_ID,
    GUARDED_KEY,
    MODEL,
    PLAIN_LABEL,
    TRICKY_LABELS,
)

ITEMS = demo_items(variants=1)
LABELS = dict(zip([item.item_id for item in ITEMS], TRICKY_LABELS + [PLAIN_LABEL] * len(ITEMS)))


def post(service, body, **kwargs):
    return requests.post(f"{service.url}/v1/search", json=body, timeout=30, **kwargs)


def photo(home: Path, item_id: str) -> bytes:
    return (home / "landing" / "drops" / DROP_ID / "images" / f"{item_id}.jpg").read_bytes()


def ids(answer) -> list[str]:
    return [product["item_id"] for product in answer.json()["products"]]


def table_version(home: Path) -> str:
    table = lancedb.connect(str(home / "lancedb")).open_table(f"{MODEL}__image")
    return table.search().select(["model_version"]).limit(1).to_arrow()["model_version"][0].as_py()


def test_health_and_readiness(service):
    assert requests.get(f"{service.url}/healthz", timeout=5).json() == {"status": "ok"}
    ready = requests.get(f"{service.url}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "models": {MODEL: "ready"}}


def test_a_text_query_finds_the_item_it_describes_with_every_answer_field(service, service_home):
    item = ITEMS[3]
    answer = post(service, {"text": item.description, "fusion": "text", "k": 5})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    first = body["products"][0]
    assert first["item_id"] == item.item_id
    assert first["description"] == item.description
    assert first["attributes"] == {
        "gender": item.gender, "article_type": item.article_type, "colour": item.colour, "label": LABELS[item.item_id]
    }
    assert first["matched"] == "text" and first["rank"] == 1 and first["score"] == pytest.approx(1.0, abs=1e-3)
    assert (body["model"], body["fusion"], body["k"], body["offset"]) == (MODEL, "text", 5, 0)
    assert body["model_version"] == table_version(service_home)
    assert {"encode", "search_text", "fusion", "total"} <= set(body["timings_ms"])
    assert len(body["products"]) == 5 and body["has_more"]


def test_the_default_search_fuses_both_tables_and_names_the_fusion(service):
    body = post(service, {"text": "red dress"}).json()
    assert body["fusion"] == DEFAULT_STRATEGY
    assert len(body["products"]) == 24
    assert {"search_image", "search_text"} <= set(body["timings_ms"])
    assert [p["rank"] for p in body["products"]] == list(range(1, 25))


def test_a_photo_finds_its_item_as_base64_and_as_an_upload(service, service_home):
    item_id = ITEMS[10].item_id
    data = photo(service_home, item_id)
    by_json = post(service, {"image": base64.b64encode(data).decode(), "fusion": "image", "k": 3})
    assert by_json.status_code == 200, by_json.text
    assert ids(by_json)[0] == item_id
    assert "decode" in by_json.json()["timings_ms"]
    uploaded = requests.post(
        f"{service.url}/v1/search/image", files={"image": ("query.jpg", data, "image/jpeg")},
        data={"k": "3", "fusion": "image", "filters": json.dumps({"colour": ITEMS[10].colour})}, timeout=30,
    )
    assert uploaded.status_code == 200, uploaded.text
    assert ids(uploaded)[0] == item_id
    assert {p["attributes"]["colour"] for p in uploaded.json()["products"]} == {ITEMS[10].colour}


def test_more_like_this_searches_by_the_items_stored_vector_and_leaves_it_out(service, service_home):
    item = ITEMS[7]
    answer = post(service, {"item_id": item.item_id, "k": 10})
    assert answer.status_code == 200, answer.text
    found = ids(answer)
    assert len(found) == 10 and item.item_id not in found
    assert [p["rank"] for p in answer.json()["products"]] == list(range(1, 11))
    # on the image table: the same neighbours as a search by the item's own photo, less the item itself
    like = ids(post(service, {"item_id": item.item_id, "k": 10, "fusion": "image"}))
    image = base64.b64encode(photo(service_home, item.item_id)).decode()
    by_photo = ids(post(service, {"image": image, "k": 11, "fusion": "image"}))
    assert by_photo[0] == item.item_id and by_photo[1:] == like
    assert post(service, {"item_id": "no-such-item"}).status_code == 404


def test_pages_follow_each_other_without_overlap(service):
    whole = ids(post(service, {"text": "blue trousers", "k": 30}))
    pages = [ids(post(service, {"text": "blue trousers", "k": 10, "offset": offset})) for offset in (0, 10, 20)]
    assert sum(pages, []) == whole
    last = post(service, {"text": "blue trousers", "k": 10, "offset": len(ITEMS) - 5}).json()
    assert len(last["products"]) == 5 and not last["has_more"]
    assert last["products"][0]["rank"] == len(ITEMS) - 4


def test_filters_match_values_exactly_and_combine(service):
    reds = {item.item_id for item in ITEMS if item.colour == "Red"}
    assert set(ids(post(service, {"text": "a product", "k": 100, "filters": {"colour": "Red"}}))) == reds
    chosen = {item.item_id for item in ITEMS if item.colour in ("Red", "Blue") and item.gender == "Women"}
    answer = post(service, {"text": "a product", "k": 100, "filters": {"colour": ["Red", "Blue"], "gender": "Women"}})
    assert set(ids(answer)) == chosen


@pytest.mark.parametrize("label", TRICKY_LABELS, ids=repr)
def test_a_filter_value_that_looks_like_sql_matches_only_the_literal_value(service, label):
    expected = [item_id for item_id, value in LABELS.items() if value == label]
    assert len(expected) == 1
    answer = post(service, {"text": "a product", "k": 100, "filters": {"label": label}})
    assert answer.status_code == 200, answer.text
    assert ids(answer) == expected


@pytest.mark.parametrize("value", ["' OR '1'='1", "nul\x00byte", "%", "back\\", "plain' --"], ids=repr)
def test_a_filter_value_no_item_holds_matches_nothing(service, value):
    answer = post(service, {"text": "a product", "k": 100, "filters": {"label": value}})
    assert answer.status_code == 200, answer.text
    assert ids(answer) == []


def test_an_unknown_filter_attribute_is_422_listing_the_attributes(service):
    answer = post(service, {"text": "dress", "filters": {"colour = 'Red' OR 1=1 --": "x"}})
    assert answer.status_code == 422
    assert answer.json()["attributes"] == ["article_type", "colour", "gender", "label"]
    assert "unknown filter attribute" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"text": "dress", "k": 0}, "greater than or equal to 1"),
        ({"text": "dress", "k": 101}, "less than or equal to 100"),
        ({"text": "dress", "offset": -1}, "greater than or equal to 0"),
        ({"text": "   "}, "text must not be empty"),
        ({"text": "x" * 1001}, "at most 1000 characters"),
        ({"text": "dress", "image": "aGVsbG8="}, "exactly one of text, image or item_id"),
        ({}, "exactly one of text, image or item_id"),
        ({"text": "dress", "where": "1=1"}, "Extra inputs are not permitted"),
        ({"text": "dress", "filters": {"colour": {"$ne": "Red"}}}, "valid string"),
    ],
)
def test_invalid_requests_are_422_with_the_reason(service, body, message):
    answer = post(service, body)
    assert answer.status_code == 422
    assert message in answer.text


def test_an_unknown_model_is_404_listing_the_models(service):
    answer = post(service, {"text": "dress", "model": "gpt-clip"})
    assert answer.status_code == 404
    assert answer.json() == {"detail": "unknown model 'gpt-clip'", "models": [MODEL]}
    assert requests.get(f"{service.url}/v1/facets?model=gpt-clip", timeout=5).status_code == 404


def test_an_unknown_fusion_is_422_listing_the_fusions(service):
    answer = post(service, {"text": "dress", "fusion": "best"})
    assert answer.status_code == 422
    assert "weighted" in answer.json()["fusions"]


def _truncated_jpeg() -> bytes:
    """A noisy 256x256 JPEG cut off after 60% of its bytes: a valid header, missing pixel data."""
    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 80).convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()[: buffer.tell() * 3 // 5]


def _bomb() -> bytes:
    """A PNG declaring 20000x20000 pixels that compresses to a few hundred kilobytes."""
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"%PDF-1.4 not an image at all", "not an image"),
        (_truncated_jpeg(), "cannot decode the JPEG"),
        (_bomb(), "decompression bomb"),
        (b"", "empty"),
    ],
    ids=["not-an-image", "truncated", "bomb", "empty"],
)
def test_bad_images_are_422_with_a_clear_message_and_the_service_stays_healthy(service, data, message):
    uploaded = requests.post(f"{service.url}/v1/search/image", files={"image": ("q.jpg", data)}, timeout=60)
    assert uploaded.status_code == 422, uploaded.text
    assert message in uploaded.json()["detail"]
    as_json = post(service, {"image": base64.b64encode(data).decode()})
    assert as_json.status_code == 422
    assert requests.get(f"{service.url}/healthz", timeout=5).status_code == 200
    assert post(service, {"text": "red dress", "k": 1}).status_code == 200


def test_a_body_over_the_limit_is_413_before_it_is_read(guarded_service):
    limit = 1024 * 1024
    with socket.create_connection(("127.0.0.1", guarded_service.port), timeout=10) as connection:
        connection.sendall(
            b"POST /v1/search/image HTTP/1.1\r\nHost: x\r\nX-API-Key: " + GUARDED_KEY.encode()
            + b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: "
            + str(50 * limit).encode() + b"\r\n\r\n--b\r\n"
        )
        started = time.monotonic()
        reply = connection.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413"), reply
    assert time.monotonic() - started < 5  # answered without waiting for the 50 MB that never came
    big = requests.post(
        f"{guarded_service.url}/v1/search/image", headers={"X-API-Key": GUARDED_KEY},
        files={"image": ("big.jpg", b"\xff" * (2 * limit))}, timeout=30,
    )
    assert big.status_code == 413
    assert "over the limit" in big.json()["detail"]
    chunked = requests.post(
        f"{guarded_service.url}/v1/search", headers={"X-API-Key": GUARDED_KEY, "Content-Type": "application/json"},
        data=(b"x" * 65536 for _ in range(40)), timeout=30,
    )
    assert chunked.status_code == 413  # no Content-Length: refused once the bytes read pass the limit
    assert requests.get(f"{guarded_service.url}/healthz", timeout=5).status_code == 200


def test_items_and_thumbnails_are_found_by_item_id(service):
    item = ITEMS[0]
    details = requests.get(f"{service.url}/v1/items/{item.item_id}", timeout=5).json()
    assert details["description"] == item.description and details["attributes"]["colour"] == item.colour
    image = requests.get(f"{service.url}{details['thumbnail_url']}?size=64", timeout=10)
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    thumbnail = Image.open(io.BytesIO(image.content))
    assert max(thumbnail.size) == 64
    again = requests.get(f"{service.url}{details['thumbnail_url']}?size=64", timeout=10)
    assert again.content == image.content
    assert requests.get(f"{service.url}{details['thumbnail_url']}?size=5000", timeout=5).status_code == 422


@pytest.mark.parametrize(
    "item_id",
    ["..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "..", "no-such-item", "images%2Fdress-red-1.jpg",
     "dress-red-1%00", "%2E%2E"],
)
def test_thumbnails_and_items_for_paths_or_unknown_ids_are_404(service, item_id):
    for path in (f"/v1/items/{item_id}/image", f"/v1/items/{item_id}"):
        answer = requests.get(f"{service.url}{path}", timeout=5)
        assert answer.status_code == 404, (path, answer.status_code)
        assert b"root:" not in answer.content


def test_models_and_facets(service, service_home):
    models = requests.get(f"{service.url}/v1/models", timeout=5).json()
    assert models["default"] == MODEL
    (tiny,) = models["models"]
    assert tiny["name"] == MODEL and tiny["status"] == "ready" and tiny["fusion"] == DEFAULT_STRATEGY
    assert tiny["version"] == table_version(service_home)
    assert tiny["tables"] == {"image": {"name": "tiny__image", "rows": len(ITEMS)},
                              "text": {"name": "tiny__text", "rows": len(ITEMS)}}
    facets = requests.get(f"{service.url}/v1/facets", timeout=5).json()["facets"]
    colours = {entry["value"]: entry["count"] for entry in facets["colour"]}
    assert colours == {colour: sum(item.colour == colour for item in ITEMS) for colour in {i.colour for i in ITEMS}}
    assert {entry["value"] for entry in facets["label"]} == set(TRICKY_LABELS) | {PLAIN_LABEL}


def test_metrics_count_requests_by_route_and_time_each_stage(service):
    post(service, {"text": "green cap", "k": 2})
    text = requests.get(f"{service.url}/metrics", timeout=5).text
    assert 'fashion_search_requests_total{method="POST",route="/v1/search",status="200"}' in text
    assert 'fashion_search_request_seconds_bucket{le="0.05",method="POST",route="/v1/search",status="200"}' in text
    for stage in ("encode", "search_image", "search_text", "fusion"):
        assert f'fashion_search_stage_seconds_count{{stage="{stage}"}}' in text
    assert f'fashion_search_table_rows{{table="tiny__image"}} {float(len(ITEMS))}' in text
    assert 'fashion_search_table_model_version{model_version="' in text
    assert 'fashion_search_encode_batch_size_count{modality="text",model="tiny"}' in text


def _tree(home: Path) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(home)): (path.stat().st_size, path.stat().st_mtime_ns)
            for folder in ("lancedb", "landing") for path in (home / folder).rglob("*") if path.is_file()}


def test_the_service_is_read_only(service, service_home):
    before = _tree(service_home)
    for method in ("put", "delete", "patch"):
        for path in ("/v1/search", "/v1/items/dress-red-1", "/v1/items/dress-red-1/image", "/v1/models"):
            assert getattr(requests, method)(f"{service.url}{path}", timeout=5).status_code == 405
    post(service, {"text": "red dress"})
    post(service, {"item_id": "dress-red-1"})
    requests.get(f"{service.url}/v1/facets", timeout=5)
    requests.get(f"{service.url}/v1/items/dress-red-1/image", timeout=5)
    assert _tree(service_home) == before


def test_the_api_key_guards_every_route_but_health(guarded_service):
    url = guarded_service.url
    for path in ("/", "/v1/models", "/v1/facets", "/metrics", "/docs", "/v1/items/dress-red-1"):
        assert requests.get(f"{url}{path}", timeout=5).status_code == 401, path
        assert requests.get(f"{url}{path}", headers={"X-API-Key": "wrong"}, timeout=5).status_code == 401, path
        assert requests.get(f"{url}{path}", headers={"X-API-Key": GUARDED_KEY}, timeout=5).status_code == 200, path
    assert requests.post(f"{url}/v1/search", json={"text": "red dress"}, timeout=5).status_code == 401
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 200
    browser = requests.Session()  # a browser user hands the key over once and keeps it as a cookie
    assert browser.get(f"{url}/?api_key={GUARDED_KEY}", timeout=5).status_code == 200
    assert browser.get(f"{url}/v1/models", timeout=5).status_code == 200
    assert GUARDED_KEY not in (Path(guarded_service.log).read_text())


def test_cors_origins_are_configurable_and_none_by_default(service, guarded_service):
    preflight = {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"}
    allowed = requests.options(f"{guarded_service.url}/v1/search", headers=preflight, timeout=5)
    assert allowed.headers.get("access-control-allow-origin") == ALLOWED_ORIGIN
    other = requests.options(f"{guarded_service.url}/v1/search",
                             headers={**preflight, "Origin": "http://evil.example"}, timeout=5)
    assert "access-control-allow-origin" not in other.headers
    default = requests.get(f"{service.url}/v1/models", headers={"Origin": ALLOWED_ORIGIN}, timeout=5)
    assert "access-control-allow-origin" not in default.headers


def test_concurrent_queries_are_encoded_together_and_each_gets_its_own_answer(service):
    from concurrent.futures import ThreadPoolExecutor

    def batches() -> tuple[float, float]:
        text = requests.get(f"{service.url}/metrics", timeout=5).text
        values = {}
        for line in text.splitlines():
            for kind in ("count", "sum"):
                if line.startswith(f'fashion_search_encode_batch_size_{kind}{{modality="text",model="tiny"}}'):
                    values[kind] = float(line.split()[-1])
        return values["count"], values["sum"]

    count_before, queries_before = batches()
    chosen = ITEMS[:24]
    with ThreadPoolExecutor(len(chosen)) as pool:
        queries = [{"text": item.description, "k": 1, "fusion": "text"} for item in chosen]
        answers = list(pool.map(lambda query: post(service, query), queries))
    assert [ids(answer) for answer in answers] == [[item.item_id] for item in chosen]
    count_after, queries_after = batches()
    assert queries_after - queries_before == len(chosen)
    assert count_after - count_before < len(chosen)  # some queries shared an encoder call
