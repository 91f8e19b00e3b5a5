"""The page at / of `bearrec serve`, in real headless Chromium (selenium with Debian's chromium and chromium-driver):
search the catalog, build a two-item history, ask for recommendations, and check that the titles shown are the API's
answer, under beam search and then exact search.

Set BEARREC_SERVE_SCREENSHOT=FILE.png to keep a screenshot of the page with its recommendations."""
from __future__ import annotations

import os
import shutil

import httpx
import pytest

from serve_process import ServerProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = None if CHROMIUM and CHROMEDRIVER else "chromium and chromedriver are not on PATH " \
                                                   "(apt-get install chromium chromium-driver)"
# CI installs both (.ci/run): there a missing browser is a failure, not a skip
pytestmark = pytest.mark.skipif(MISSING is not None and not os.environ.get("CI"), reason=str(MISSING))


@pytest.fixture()
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert MISSING is None, MISSING
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--window-size=1100,760", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_page_searches_builds_a_history_and_shows_the_api_answer(small_run, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    with ServerProcess(small_run, ["--num-beams", "6", "--device", "cpu"]) as server:
        browser.get(server.url + "/")
        wait.until(ec.text_to_be_present_in_element((By.ID, "run"), f"run {small_run.name}"))

        def pick(query: str) -> str:
            box = browser.find_element(By.ID, "query")
            box.clear()
            box.send_keys(query)
            wait.until(lambda d: (found := d.find_elements(By.CSS_SELECTOR, "#found button.pick")) and all(
                query in b.text for b in found))
            first = browser.find_element(By.CSS_SELECTOR, "#found button.pick")
            item_id = first.get_attribute("data-item-id")
            first.click()
            return item_id

        history = [pick("red"), pick("blue")]
        shown = [li.get_attribute("data-item-id") for li in browser.find_elements(By.CSS_SELECTOR, "#history li")]
        assert shown == history and len(set(history)) == 2

        def recommendations() -> list[tuple[str, str]]:
            rows = browser.find_elements(By.CSS_SELECTOR, "#recs tbody tr")
            return [(r.find_element(By.CSS_SELECTOR, ".title").text, r.find_element(By.CSS_SELECTOR, ".score").text)
                    for r in rows]

        browser.find_element(By.ID, "go").click()
        wait.until(lambda d: "beam search" in d.find_element(By.ID, "status").text)
        api = httpx.post(f"{server.url}/v1/recommend", json={"history": history, "k": 6, "search": "beam"}).json()
        assert recommendations() == [(e["title"], f"{e['score']:.4f}") for e in api["recommendations"]]
        assert len(api["recommendations"]) == 6
        if os.environ.get("BEARREC_SERVE_SCREENSHOT"):
            browser.save_screenshot(os.environ["BEARREC_SERVE_SCREENSHOT"])

        browser.find_element(By.ID, "search-exact").click()
        browser.find_element(By.ID, "go").click()
        wait.until(lambda d: "exact search" in d.find_element(By.ID, "status").text)
        api = httpx.post(f"{server.url}/v1/recommend", json={"history": history, "k": 6, "search": "exact"}).json()
        assert recommendations() == [(e["title"], f"{e['score']:.4f}") for e in api["recommendations"]]
        assert "certified exact" in browser.find_element(By.ID, "status").text
        assert browser.save_screenshot(str(tmp_path / "page.png"))
