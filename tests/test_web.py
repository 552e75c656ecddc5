"""The web pages in headless Chromium: chat (type, send, watch the reply stream in, a second turn)
and human evaluation (vote, see the tally and the results change). Needs Debian's `chromium` and
`chromium-driver` and the `selenium` package; skipped with the reason when they are missing."""

from __future__ import annotations

import json
import shutil
import tempfile

import pytest

webdriver = pytest.importorskip("selenium.webdriver")
pytest.importorskip("fastapi")
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from lmforge.serve.config import SampleConfig
from lmforge.serve.engine import ServedModel
from lmforge.serve.human_eval import prepare
from lmforge.serve.server import RunningServer, create_app
from lmforge.tiny import make_tiny_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)",
)
KEY = "web-key"
RATER_KEY = "rater-key"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [
        ServedModel.load(str(make_tiny_run(root / name, seed=k, block_size=96)))
        for k, name in enumerate(("alphamodel", "betamodel"))
    ]


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("human")
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "\n".join(json.dumps({"prompt": f"prompt {i}", "reference": f"ref {i}"}) for i in range(3))
    )
    db = prepare(
        [str(m.path) for m in models],
        prompts,
        root / "human.sqlite",
        SampleConfig(max_new_tokens=5, temperature=0.0, top_k=None),
        log=lambda m: None,
    )
    with RunningServer(create_app(models, api_key=KEY, human_db=db, rater_key=RATER_KEY)) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
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


def wait(driver, condition, timeout: float = 60):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d))


def login(browser, server) -> None:
    """Store the API key the way the settings field does."""
    browser.get(f"{server.url}/chat")
    browser.execute_script("localStorage.setItem('lmforge.apiKey', arguments[0])", KEY)


def test_chat_page_streams_a_reply_and_keeps_the_conversation(browser, server, models):
    login(browser, server)
    browser.get(f"{server.url}/chat")
    wait(browser, lambda d: d.find_element(By.ID, "model").get_attribute("value") == "alphamodel")
    browser.find_element(By.CSS_SELECTOR, "#settings summary").click()
    for field, value in (("temperature", "0"), ("max_tokens", "12")):
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    browser.find_element(By.ID, "input").send_keys("hello page")
    browser.find_element(By.ID, "send").click()
    reply = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-done='1']"))[0]

    m = models[0]
    want = m.complete(
        m.chat_ids([{"role": "user", "content": "hello page"}]),
        SampleConfig(max_new_tokens=12, temperature=0, top_k=None),
        m.chat_stop_ids(),
    ).text
    assert reply.find_element(By.CLASS_NAME, "content").get_attribute("textContent") == want
    assert int(reply.get_attribute("data-chunks")) > 1  # arrived in pieces
    assert "prompt tokens" in browser.find_element(By.ID, "status").text

    browser.find_element(By.ID, "input").send_keys("and again\n")  # Enter sends
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-done='1']")) == 2)
    second = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant .content")[1].get_attribute("textContent")
    history = [
        {"role": "user", "content": "hello page"},
        {"role": "assistant", "content": want},
        {"role": "user", "content": "and again"},
    ]
    want2 = m.complete(
        m.chat_ids(history), SampleConfig(max_new_tokens=12, temperature=0, top_k=None), m.chat_stop_ids()
    ).text
    assert second == want2  # the first exchange was sent along

    browser.find_element(By.ID, "reset").click()
    assert browser.find_elements(By.CSS_SELECTOR, ".msg") == []


def test_chat_page_drops_the_oldest_exchange_when_the_context_is_full(browser, server):
    login(browser, server)
    browser.get(f"{server.url}/chat")
    wait(browser, lambda d: d.find_element(By.ID, "model").get_attribute("value") == "alphamodel")
    browser.find_element(By.CSS_SELECTOR, "#settings summary").click()
    box = browser.find_element(By.ID, "max_tokens")
    box.clear()
    box.send_keys("500")  # the first reply fills the 96-token context
    browser.find_element(By.ID, "input").send_keys("first\n")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-done='1']"))
    browser.find_element(By.ID, "input").send_keys("second\n")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-done='1']")) == 2)
    assert "context full: dropped the 1 oldest exchange" in browser.find_element(By.ID, "status").text
    dimmed = browser.find_elements(By.CSS_SELECTOR, ".msg.dropped .content")
    assert [d.get_attribute("textContent") for d in dimmed][:1] == ["first"] and len(dimmed) == 2


def test_chat_page_shows_server_errors(browser, server):
    login(browser, server)
    browser.get(f"{server.url}/chat")
    wait(browser, lambda d: d.find_element(By.ID, "model").get_attribute("value") == "alphamodel")
    browser.find_element(By.ID, "input").send_keys("word " * 150 + "\n")
    status = wait(
        browser,
        lambda d: (
            d.find_element(By.ID, "status").text.startswith("error") and d.find_element(By.ID, "status")
        ),
    )
    assert "maximum context length is 96 tokens" in status.text
    assert browser.find_elements(By.CSS_SELECTOR, ".msg.assistant") == []


def test_human_eval_page_votes_and_results(browser, server):
    login(browser, server)
    browser.get(f"{server.url}/human")
    task = wait(browser, lambda d: d.find_element(By.ID, "task").get_attribute("data-task"))
    assert browser.find_element(By.ID, "prompt").text.startswith("prompt ")
    assert browser.find_element(By.ID, "reference").text.startswith("ref ")
    assert "alphamodel" not in browser.page_source and "betamodel" not in browser.page_source  # anonymous
    assert browser.find_element(By.ID, "tally").text == "0"

    browser.find_element(By.CSS_SELECTOR, "#score-a option[value='']").click()
    browser.find_element(By.XPATH, "//select[@id='score-a']/option[text()='4']").click()
    browser.find_element(By.ID, "vote-a").click()
    wait(browser, lambda d: d.find_element(By.ID, "tally").text == "1")
    assert browser.find_element(By.ID, "yours").text == "1"
    wait(browser, lambda d: d.find_element(By.ID, "task").get_attribute("data-task") != task)
    browser.find_element(By.ID, "vote-tie").click()
    wait(browser, lambda d: d.find_element(By.ID, "tally").text == "2")
    browser.find_element(By.ID, "vote-bad").click()
    wait(browser, lambda d: d.find_element(By.ID, "done").is_displayed())
    assert browser.find_element(By.ID, "tally").text == "3"

    browser.get(f"{server.url}/human/results")
    wait(browser, lambda d: d.find_element(By.ID, "summary").get_attribute("data-votes") == "3")
    rows = browser.find_elements(By.CSS_SELECTOR, "#models tbody tr")
    assert sorted(r.find_elements(By.TAG_NAME, "td")[0].text for r in rows) == ["alphamodel", "betamodel"]
    games = [int(r.find_elements(By.TAG_NAME, "td")[5].text) for r in rows]
    assert games == [3, 3]
    assert "Bradley-Terry" in browser.find_element(By.ID, "method").text


def test_human_page_asks_for_the_key_and_a_rater_key_opens_only_human_eval(browser, server):
    """Without a key the page says so at once (no silent '0 comparisons'), takes the key there,
    and a rater's link (/human#key=...) logs in; the rater key does not open the models."""
    browser.get(f"{server.url}/human")
    browser.execute_script("localStorage.clear()")
    browser.get(f"{server.url}/human")
    box = wait(
        browser,
        lambda d: d.find_element(By.ID, "needkey").is_displayed() and d.find_element(By.ID, "needkey"),
    )
    assert "needs a key" in box.text and "rater key" in box.text
    assert browser.find_element(By.ID, "comparisons").text == "–"
    assert not browser.find_element(By.ID, "task").is_displayed()
    browser.find_element(By.ID, "needkey-input").send_keys("wrong")
    browser.find_element(By.ID, "needkey-save").click()
    wait(browser, lambda d: "was refused" in d.find_element(By.ID, "needkey-msg").text)
    browser.find_element(By.ID, "needkey-input").send_keys(RATER_KEY + "\n")  # Enter submits
    wait(browser, lambda d: d.find_element(By.ID, "task").get_attribute("data-task"))
    assert not browser.find_element(By.ID, "needkey").is_displayed()
    assert browser.find_element(By.ID, "comparisons").text == "3"

    browser.execute_script("localStorage.clear()")
    browser.get("about:blank")  # from /human itself, /human#key=... would not load the page again
    browser.get(f"{server.url}/human#key={RATER_KEY}")
    wait(browser, lambda d: d.find_element(By.ID, "task").get_attribute("data-task"))
    assert "#" not in browser.current_url  # the key left the address bar
    browser.get(f"{server.url}/human/results")
    wait(browser, lambda d: d.find_element(By.ID, "summary").get_attribute("data-votes") is not None)
    browser.get(f"{server.url}/chat")
    wait(browser, lambda d: "Incorrect or missing API key" in d.find_element(By.ID, "status").text)
