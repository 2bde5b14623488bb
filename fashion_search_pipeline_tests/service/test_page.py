"""The search page in Debian's Chromium (Playwright): type a query, upload a photo, filter, page, more like this;
variants grouped behind "+N variants", and a zero-shot facet as a filter."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from fashion_search_pipeline.store.fusion import DEFAULT_STRATEGY
from fashion_search_pipeline_tests.service.conftest import CLUSTERS, DROP_ID, REUPLOADS, VARIANTS_PRODUCTS, tag_facets
from fashion_search_pipeline_tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (Debian's chromium package)")
    expect.set_options(timeout=20_000)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900},
        )
        page = context.new_page()
        page.set_default_timeout(20_000)
        try:
            yield page
        finally:
            context.close()


def test_a_shopper_searches_uploads_filters_pages_and_asks_for_more_like_this(
    browser_page, service, service_home, artifacts
):
    page = browser_page
    page.goto(service.url, wait_until="networkidle")
    expect(page.locator("#model option")).to_have_count(1)
    results = page.locator("#results .product")

    page.fill("#query", "red dress")
    page.click("#search-button")
    expect(results).to_have_count(24)
    expect(page.locator("#status")).to_contain_text("model tiny · version ")
    expect(page.locator("#status")).to_contain_text(f"fusion {DEFAULT_STRATEGY}")
    expect(results.first.locator("img")).to_have_js_property("complete", True)
    page.wait_for_function("[...document.querySelectorAll('#results img')].slice(0, 8).every(i => i.naturalWidth > 0)")
    page.screenshot(path=str(artifacts / "1-text-search.png"))

    page.click("#more")  # the next page is appended
    expect(results).to_have_count(catalog_rows(service.url))
    expect(page.locator("#more")).to_be_hidden()

    page.select_option("select[data-attribute='colour']", "Red")
    # The filtered answer replaces the grid: wait for it (the unfiltered one may already start with red items).
    page.wait_for_function("() => { const a = [...document.querySelectorAll('#results .product .attributes')];"
                           " return a.length > 0 && a.every(p => p.textContent.includes('Red')); }")
    colours = page.locator("#results .product .attributes").all_inner_texts()
    assert colours and all("Red" in text for text in colours)
    page.screenshot(path=str(artifacts / "2-filtered.png"))
    page.select_option("select[data-attribute='colour']", "")

    photo = service_home / "landing" / "drops" / DROP_ID / "images" / "shoes-blue-1.jpg"
    page.select_option("#fusion", "image")  # random weights: only the image table ranks the photo itself first
    page.set_input_files("#image-input", str(photo))
    expect(page.locator("#query-chip")).to_have_text("Photo: shoes-blue-1.jpg")
    expect(results.first).to_have_attribute("data-item-id", "shoes-blue-1")
    page.screenshot(path=str(artifacts / "3-photo-search.png"))

    second = results.nth(1)
    neighbour = second.get_attribute("data-item-id")
    second.locator(".like").click()
    expect(page.locator("#query-chip")).to_have_text(f"More like {neighbour}")
    page.wait_for_function(
        "id => document.getElementById('status').textContent.includes('products')"
        " && ![...document.querySelectorAll('#results .product')].some(p => p.dataset.itemId === id)",
        arg=neighbour,
    )
    expect(results).to_have_count(24)
    page.screenshot(path=str(artifacts / "4-more-like-this.png"))


def test_the_page_drops_a_photo_and_fits_a_phone(browser_page, service, service_home, artifacts):
    page = browser_page
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(service.url, wait_until="networkidle")
    page.select_option("#fusion", "image")
    photo = (service_home / "landing" / "drops" / DROP_ID / "images" / "cap-green-1.jpg").read_bytes()
    transfer = page.evaluate_handle(
        """bytes => { const t = new DataTransfer();
                      t.items.add(new File([new Uint8Array(bytes)], 'dropped.jpg', {type: 'image/jpeg'}));
                      return t; }""",
        list(photo),
    )
    page.dispatch_event("body", "dragenter", {"dataTransfer": transfer})
    expect(page.locator("#drop-zone")).to_be_visible()
    page.dispatch_event("body", "drop", {"dataTransfer": transfer})
    expect(page.locator("#results .product").first).to_have_attribute("data-item-id", "cap-green-1")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling on a phone
    page.screenshot(path=str(artifacts / "5-phone.png"))


# Holds back every answer to a text search by 1.5 s (network latency, in the page's own fetch), and counts the
# text searches that have settled: answered after the delay, or aborted.
HOLD_BACK_TEXT_ANSWERS = """
  const realFetch = window.fetch;
  window.settledTextSearches = 0;
  window.fetch = async (path, options) => {
    if (path !== '/v1/search') return realFetch(path, options);
    try {
      const response = await realFetch(path, options);
      await new Promise(resolve => setTimeout(resolve, 1500));
      return response;
    } finally {
      window.settledTextSearches += 1;
    }
  };
"""


def test_a_slow_earlier_answer_never_replaces_the_newer_search(browser_page, service, service_home, artifacts):
    page = browser_page.context.new_page()
    try:
        page.add_init_script(HOLD_BACK_TEXT_ANSWERS)
        page.goto(service.url, wait_until="networkidle")
        page.select_option("#fusion", "image")
        page.fill("#query", "red dress")
        page.click("#search-button")  # its answer comes 1.5 s late
        photo = service_home / "landing" / "drops" / DROP_ID / "images" / "shoes-blue-1.jpg"
        page.set_input_files("#image-input", str(photo))
        first = page.locator("#results .product").first
        expect(first).to_have_attribute("data-item-id", "shoes-blue-1")
        page.wait_for_function("window.settledTextSearches === 1")
        page.evaluate("() => new Promise(requestAnimationFrame)")  # let the page handle what arrived
        expect(page.locator("#query-chip")).to_have_text("Photo: shoes-blue-1.jpg")
        assert first.get_attribute("data-item-id") == "shoes-blue-1"
        assert "fusion image" in page.locator("#status").inner_text()
        expect(page.locator("#error")).to_be_hidden()
    finally:
        page.close()


def test_more_is_hidden_while_a_new_first_page_is_on_its_way(browser_page, service, artifacts):
    page = browser_page.context.new_page()
    try:
        page.add_init_script(HOLD_BACK_TEXT_ANSWERS)
        page.goto(service.url, wait_until="networkidle")
        page.fill("#query", "red dress")
        page.click("#search-button")
        expect(page.locator("#more")).to_be_visible()  # the catalog holds more than one page
        page.fill("#query", "blue jeans")
        page.click("#search-button")  # its first page comes 1.5 s late: "more" must not page it from offset 24
        expect(page.locator("#more")).to_be_hidden()
        page.wait_for_function("window.settledTextSearches === 2")
        expect(page.locator("#results .product")).to_have_count(24)
        expect(page.locator("#more")).to_be_visible()
    finally:
        page.close()


def catalog_rows(url: str) -> int:
    """Products in the image table now (test_freshness may have added a drop)."""
    (model,) = requests.get(f"{url}/v1/models", timeout=10).json()["models"]
    return model["tables"]["image"]["rows"]


def test_the_page_groups_variants_shows_them_on_demand_and_filters_by_a_zero_shot_facet(
    browser_page, variants_service, artifacts
):
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(variants_service.url, wait_until="networkidle")
    results = page.locator("#results .product")
    expect(page.locator("#collapse")).to_be_checked()
    page.select_option("#k", "96")
    page.fill("#query", "red dress")
    page.click("#search-button")
    grouped = VARIANTS_PRODUCTS - sum(len(copies) for copies in REUPLOADS.values())
    expect(results).to_have_count(grouped)

    members = CLUSTERS["dress-red-1"]
    shown = page.locator("#results .product", has=page.locator(".variants:visible"))
    expect(shown).to_have_count(len(CLUSTERS))
    representative = results.filter(has=page.locator(".variants", has_text="+2 variants")).get_attribute("data-item-id")
    card = page.locator(f"#results .product[data-item-id='{representative}']")
    assert representative in members
    card.locator(".variants").click()
    variants = page.locator(f"#results .product.variant[data-variant-of='{representative}']")
    expect(variants).to_have_count(2)
    assert set(variants.evaluate_all("cards => cards.map(c => c.dataset.itemId)")) == members - {representative}
    following = card.evaluate("c => [c.nextElementSibling, c.nextElementSibling.nextElementSibling]"
                              ".map(n => n.dataset.variantOf)")
    assert following == [representative, representative], "the variants appear right after their product"
    expect(card.locator(".variants")).to_have_text("Hide variants")
    card.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "6-variants.png"))
    card.locator(".variants").click()
    expect(variants).to_have_count(0)

    page.uncheck("#collapse")  # every product, variants included, each on its own
    expect(results).to_have_count(VARIANTS_PRODUCTS)
    expect(page.locator("#results .variants:visible")).to_have_count(0)
    page.check("#collapse")
    expect(results).to_have_count(grouped)

    name, values = next(iter(tag_facets(variants_service.url).items()))
    value = values[-1]["value"]
    page.select_option(f"select[data-attribute='{name}']", value)
    answer = requests.post(f"{variants_service.url}/v1/search", timeout=60, json={
        "text": "red dress", "k": 96, "collapse": True, "filters": {name: value}}).json()
    expected = [product["item_id"] for product in answer["products"]]
    assert expected and all(product["attributes"][name] == value for product in answer["products"])
    page.wait_for_function(
        "ids => JSON.stringify([...document.querySelectorAll('#results .product')].map(p => p.dataset.itemId))"
        " === JSON.stringify(ids)", arg=expected,
    )
    page.screenshot(path=str(artifacts / "7-zero-shot-facet.png"))
