"""The /inspect page of `lmforge serve`: its JSON endpoint over real HTTP on loopback (behind the API
key, one clear error per bad request), and the page in headless Chromium: it renders, hovering a
token changes the highlighted attention row, and a screenshot is not blank. The browser part
needs Debian's `chromium` and `chromium-driver` and `selenium`; it is skipped with the reason
when they are missing."""

from __future__ import annotations

import io
import shutil
import tempfile

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from lmforge.inspect.attention import attention_maps
from lmforge.serve.engine import ServedModel
from lmforge.serve.server import RunningServer, create_app
from lmforge.tiny import make_tiny_run

KEY = "inspect-key"
TEXT = "I hit the baseball with a bat"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return ServedModel.load(
        str(make_tiny_run(tmp_path_factory.mktemp("runs") / "tinyinspect", block_size=48))
    )


@pytest.fixture(scope="module")
def server(model):
    with RunningServer(create_app([model], api_key=KEY)) as srv:
        yield srv


def post(server, body, key=KEY):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.url}/inspect/api", json=body, headers=headers, timeout=120)


def test_api_returns_the_models_attention_and_surprise(server, model):
    r = post(server, {"text": TEXT})
    assert r.status_code == 200, r.text
    data = r.json()
    want = attention_maps(model.model, model.tokenizer, TEXT)
    assert data["model"] == "tinyinspect" and len(data["maps"]) == len(want) == 2
    for got, m in zip(data["maps"], want):
        assert got["queries"] == m.queries and got["keys"] == m.keys
        np.testing.assert_allclose(np.array(got["probs"]), m.probs, atol=1e-4)
    assert len(data["surprise"]["tokens"]) == len(data["tokens"]) == len(model.tokenizer.encode(TEXT))
    assert httpx.get(f"{server.url}/inspect", timeout=30).status_code == 200


@pytest.mark.parametrize(
    "body,key,status,words",
    [
        ({"text": TEXT}, None, 401, "API key"),
        ({"text": TEXT}, "wrong", 401, "API key"),
        ({"text": TEXT, "model": "nope"}, KEY, 404, "nope"),
        ({"text": ""}, KEY, 400, "text"),
        ({"text": "word " * 60}, KEY, 400, "at most 47"),
        ({"text": TEXT, "extra": 1}, KEY, 400, "extra"),
    ],
)
def test_api_errors_are_one_clear_message(server, body, key, status, words):
    r = post(server, body, key)
    assert r.status_code == status
    assert words in r.json()["error"]["message"]
    assert post(server, {"text": "still serving"}).status_code == 200


# ---- the page in a browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="lmforge-chromium-")
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1200,900",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@needs_browser
def test_page_renders_hover_moves_the_highlighted_row_and_screenshot_is_not_blank(browser, server):
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def wait(condition):
        return WebDriverWait(browser, 60, poll_frequency=0.1).until(lambda d: condition(d))

    browser.get(f"{server.url}/inspect")
    browser.execute_script("localStorage.setItem('lmforge.apiKey', arguments[0])", KEY)
    browser.get(f"{server.url}/inspect")
    wait(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    queries = browser.find_elements(By.CSS_SELECTOR, "#queries span")
    assert queries[0].text == "<eot>" and len(queries) > 5
    n = len(queries)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#grid div.cell")) == n * n
    assert browser.find_element(By.ID, "grid").get_attribute("data-row") == str(n - 1)  # the last token

    for i in (2, 4):
        ActionChains(browser).move_to_element(queries[i]).perform()
        wait(lambda d, i=i: d.find_element(By.ID, "grid").get_attribute("data-row") == str(i))
        active = browser.find_elements(By.CSS_SELECTOR, "#grid div.cell.active")
        assert len(active) == n and {a.get_attribute("data-row") for a in active} == {str(i)}
        # the keys are shaded by that row: causal, so keys after the query are transparent
        shades = [
            k.value_of_css_property("background-color")
            for k in browser.find_elements(By.CSS_SELECTOR, "#keys span")
        ]
        assert all(s.endswith(", 0)") for s in shades[i + 1 :]) and not shades[0].endswith(", 0)")

    browser.find_element(By.XPATH, "//select[@id='layer']/option[@value='1']").click()
    wait(lambda d: "blocks.1.attn" in d.find_element(By.ID, "maptitle").text)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#surprise span")) == n - 1  # the text's tokens

    shot = np.asarray(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB"))
    assert shot.std() > 10 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 50  # drawn, not blank
