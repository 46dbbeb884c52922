"""The playground page in a real browser (Debian's Chromium, headless, driven by selenium) against
the live server on the demo models: what the page highlights and lists is what the API answers."""

from __future__ import annotations

import json
import logging
import shutil
import urllib.request
from pathlib import Path

import pytest

from client.bench.local_server import SERVING_MODEL, run_server
from conversion.demo_data import generate

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SERVING_MODEL / "parity.json").exists(), reason="demo models not built"),
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="Debian's chromium and chromium-driver are missing (./setup.sh --dev installs them as root)",
    ),
]

SCHEMA = {"人物": ["出生地", "毕业院校", "职业", "妻子"], "歌曲": ["歌手", "作曲"]}


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for name in ("selenium", "urllib3"):  # one line per WebDriver call otherwise
        logging.getLogger(name).setLevel(logging.WARNING)

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--window-size=1200,1000"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Screenshots of each state (kept in the test's output folder)."""
    return tmp_path_factory.mktemp("screenshots")


def api(server, task: str, texts: list[str], schema=None) -> tuple[int, dict]:
    """The KServe infer answer for the same request, asked directly."""
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]
    body: dict = {"inputs": inputs}
    if schema is not None:
        inputs.append({"name": "schema", "datatype": "BYTES", "shape": [1], "data": [schema]})
        body["parameters"] = {"position_prob": 0.5}
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.kserve_port}/v2/models/{task}/infer", data=json.dumps(body).encode()
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def expected_uie(item: dict) -> tuple[set, set]:
    """(spans, relations) of one UIE result, read from the API's nested answer."""
    spans, relations = set(), set()

    def walk(tree: dict, parent: dict | None) -> None:
        for kind, found in tree.items():
            for x in found:
                spans.add((kind, x["start"], x["end"]))
                if parent is not None:
                    relations.add((parent["text"], parent["start"], kind, x["text"], x["start"]))
                walk(x.get("relations", {}), x)

    walk(item, None)
    return spans, relations


def expected_spo(item: dict) -> tuple[set, set]:
    spans, relations = set(), set()
    for t in item["spo_list"]:
        spans |= {
            ("subject", t["subject_start"], t["subject_end"]),
            (t["predicate"], t["object_start"], t["object_end"]),
        }
        relations.add((t["subject"], t["subject_start"], t["predicate"], t["object"], t["object_start"]))
    return spans, relations


def page_results(driver) -> list[dict]:
    """What the page shows, per text: its text, marked spans, listed relations, error."""
    return driver.execute_script(
        """
        return [...document.querySelectorAll('article.result')].map(a => {
          const spans = {};
          for (const m of a.querySelectorAll('mark.span')) spans[m.dataset.spanId] =
            [m.dataset.type, +m.dataset.start, +m.dataset.end, getComputedStyle(m).backgroundColor];
          return {
            text: a.querySelector('p.text').textContent,
            spans: Object.values(spans),
            relations: [...a.querySelectorAll('li.relation')].map(li => [li.dataset.subject,
              +li.dataset.subjectStart, li.dataset.predicate, li.dataset.object, +li.dataset.objectStart]),
            error: a.querySelector('.text-error')?.textContent || null,
          };
        });"""
    )


def submit(driver, task: str, texts: list[str], schema: str | None = None) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script(
        """const [task, texts, schema] = arguments;
        document.querySelector(`input[value=${task}]`).click();
        document.getElementById('texts').value = texts.join('\\n');
        if (schema !== null) document.getElementById('schema').value = schema;
        delete document.getElementById('results').dataset.done;
        document.getElementById('latency').textContent = '';
        document.getElementById('submit').click();""",
        task,
        texts,
        schema,
    )
    WebDriverWait(driver, 30).until(lambda d: d.find_element("id", "latency").text)


def open_page(driver, server) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"http://127.0.0.1:{server.kserve_port}/")
    WebDriverWait(driver, 60).until(lambda d: len(d.find_elements("css selector", "#models li.ready")) == 2)


def held_out_texts(n: int) -> list[str]:
    _, test = generate(seed=0)
    return [r["text"] for r in test if len(r["text"]) < 60][:n]


@pytest.mark.parametrize("task", ["uie", "spo"])
def test_the_page_shows_what_the_api_answers(server, browser, shots, task):
    open_page(browser, server)
    assert json.loads(browser.find_element("id", "schema").get_attribute("value"))  # the card's example
    texts = [*held_out_texts(3), "   ", "Müller 与 José 在北京见面😀。"]
    schema = json.dumps(SCHEMA, ensure_ascii=False) if task == "uie" else None
    submit(browser, task, texts, schema)
    browser.save_screenshot(str(shots / f"{task}-results.png"))
    status, answer = api(server, task, texts, schema)
    assert status == 200
    items = [json.loads(x) for x in answer["outputs"][0]["data"]]
    shown = page_results(browser)
    assert [s["text"] for s in shown] == texts
    found_any = False
    for item, seen in zip(items, shown, strict=True):
        if "error" in item:
            assert seen["error"] == f"{item['error']['type']}: {item['error']['message']}"
            continue
        spans, relations = (expected_uie if task == "uie" else expected_spo)(item)
        assert {tuple(s[:3]) for s in seen["spans"]} == spans
        assert {tuple(r) for r in seen["relations"]} == relations
        assert all(s[3] not in ("", "rgba(0, 0, 0, 0)") for s in seen["spans"])  # coloured
        found_any |= bool(relations)
    assert found_any, "the held-out texts should give some relations"
    assert shown[3]["error"].startswith("invalid_text")


def test_an_invalid_schema_shows_the_servers_message(server, browser, shots):
    open_page(browser, server)
    submit(browser, "uie", held_out_texts(1), '{"人物": [1]}')
    browser.save_screenshot(str(shots / "invalid-schema.png"))
    status, answer = api(server, "uie", held_out_texts(1), '{"人物": [1]}')
    assert status == 400
    error = browser.find_element("id", "request-error")
    assert error.is_displayed() and error.text == answer["error"]
    assert browser.find_elements("css selector", "article.result") == []


def test_raw_json_and_curl_reproduce_the_request(server, browser, shots):
    open_page(browser, server)
    texts = held_out_texts(2)
    submit(browser, "spo", texts)
    raw = json.loads(browser.find_element("id", "raw").get_attribute("textContent"))
    curl = browser.find_element("id", "curl").get_attribute("textContent")
    body = json.loads(curl.split(" -d '", 1)[1].rstrip("'"))
    assert body["inputs"][0]["data"] == texts
    assert raw["outputs"] == api(server, "spo", texts)[1]["outputs"]


def test_usable_at_phone_width(server, browser, shots):
    browser.set_window_size(390, 844)
    try:
        open_page(browser, server)
        submit(browser, "uie", held_out_texts(2), json.dumps(SCHEMA, ensure_ascii=False))
        browser.save_screenshot(str(shots / "phone.png"))
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        labels = browser.execute_script(
            "return [...document.querySelectorAll('textarea, input')].every(e => e.labels.length > 0)"
        )
        assert labels  # every field has a label
    finally:
        browser.set_window_size(1200, 1000)


def test_off_when_configured(tmp_path):
    with run_server(tmp_path / "srv", backend="onnx", playground=False) as srv:
        port = srv.config()["ie"]["kserve_http_port"]
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
        assert err.value.code == 404


def test_page_loads_nothing_from_elsewhere(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.kserve_port}/", timeout=10) as resp:
        html = resp.read().decode()
        assert resp.headers["Content-Security-Policy"] == "default-src 'self'"
    assert "http://" not in html and "https://" not in html
    assert shutil.which("chromium") or CHROMIUM.exists()
