"""The published book in a real browser.

Serves ``_build/html`` on localhost and opens every page of the table of contents in headless
Chromium (the system ``chromium`` and ``chromium-driver`` packages; nothing is downloaded).
Per page it asserts:

- no severe console entry (a JavaScript error, a resource that failed to load);
- every plotly figure drawn (an ``svg.main-svg`` or a canvas inside each ``.plotly-graph-div``);
- every ``<img>`` decoded (``complete && naturalWidth > 0``);
- every maths element typeset by MathJax (an ``mjx-container`` inside, no TeX error);
- every stored ipywidget drawn;
- no request to any host but the local server, and no local request answered with an error;
- on the rendered page (the DOM after MathJax ran), :func:`facelab.book_checks.scan_html`
  finds nothing: no raw Markdown table, no MathJax error node or TeX left in the text, no
  heading inside a cell output, no internal term of the blocklist.

A screenshot of each page (window 1280x2000) goes to ``_build/screenshots/<page>.png``.

Without a built book (``make book``), or without chromium/chromedriver/selenium, the tests skip;
with ``FACELAB_REQUIRE_BOOK=1`` (as ``make test`` sets) they fail instead.

    FACELAB_REQUIRE_BOOK=1 pytest -p no:xdist -q -m browser tests/test_browser.py
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from facelab.book_checks import scan_html

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
HTML_DIR = ROOT / "_build" / "html"
SCREENSHOT_DIR = ROOT / "_build" / "screenshots"
TOC = ROOT / "_toc.yml"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REQUIRE_ENV = "FACELAB_REQUIRE_BOOK"

WINDOW = (1280, 2000)  # px; tall so that a screenshot shows most of a chapter's opening
PAGE_LOAD_TIMEOUT_S = 120  # a chapter with plotly figures is several MB of inline JavaScript
RENDER_TIMEOUT_S = 60  # MathJax, plotly and the widget manager finish after the load event
POLL_S = 0.2
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# URL schemes that never leave the page (inline data, the browser's own pages).
NON_NETWORK_SCHEMES = {"data", "blob", "about", "chrome", "chrome-error", "devtools", "javascript"}
# The flags of the brief: no sandbox (containers), no GPU, no QUIC, no first-run, no background
# networking, component updates or sync, so that the browser itself contacts nobody.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # /dev/shm is small in containers; chromium crashes on big pages
)


def toc_pages(toc: Path = TOC) -> list[str]:
    """Every document of the book's table of contents, e.g. ``["book/intro", "book/02_morphable_models", ...]``."""
    import yaml

    def walk(node) -> list[str]:
        if isinstance(node, list):
            return [f for item in node for f in walk(item)]
        if isinstance(node, dict):
            own = [node["file"]] if "file" in node else []
            own += [node["root"]] if "root" in node else []
            return own + [f for key in ("parts", "chapters", "sections") for f in walk(node.get(key, []))]
        return []

    return walk(yaml.safe_load(toc.read_text()))


def _unavailable(reason: str):
    """Skip, or fail where the book is required (CI)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the request log would drown pytest's output
        pass


@contextlib.contextmanager
def serve(directory: Path):
    """Serve ``directory`` on a free localhost port; yields the base URL (no trailing slash)."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def chromium():
    """A headless Chromium under chromedriver with a fresh profile, console and network logs on."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (requirements.lock)")
    for exe, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not exe.exists():
            _unavailable(f"{exe} is missing: apt-get install {package}")
    with tempfile.TemporaryDirectory(prefix="facelab-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            driver.set_window_size(*WINDOW)
            driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
            driver.set_script_timeout(RENDER_TIMEOUT_S + 10)
            yield driver
        finally:
            driver.quit()


# Each returns a list of short descriptions of what is not (yet) right on the page.
_JS_UNDRAWN_PLOTS = """
return Array.from(document.querySelectorAll('.plotly-graph-div'))
  .filter(d => !d.querySelector('svg.main-svg, canvas'))
  .map(d => 'plotly figure #' + d.id + ' not drawn');
"""
_JS_BAD_IMAGES = """
return Array.from(document.images)
  .filter(i => !(i.complete && i.naturalWidth > 0))
  .map(i => 'image not loaded: ' + (i.currentSrc || i.src).slice(0, 120));
"""
_JS_UNTYPESET_MATHS = """
const out = [];
for (const m of document.querySelectorAll('.math')) {
  if (!m.querySelector('mjx-container')) out.push('maths not typeset: ' + m.textContent.slice(0, 80));
}
for (const e of document.querySelectorAll('mjx-merror')) out.push('TeX error: ' + (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 120));
return out;
"""
_JS_UNDRAWN_WIDGETS = """
return Array.from(document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]'))
  .filter(s => { const p = s.previousElementSibling;
                 return !(p && p.classList.contains('widget-subarea') && p.childElementCount > 0); })
  .map(s => 'ipywidget not drawn: ' + s.textContent.trim().slice(0, 80));
"""
_JS_MATHJAX_DONE = """
const timeoutMs = arguments[0], done = arguments[arguments.length - 1], t0 = Date.now();
(function poll() {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise)
    MathJax.startup.promise.then(() => done(''), e => done('MathJax failed: ' + e));
  else if (Date.now() - t0 > timeoutMs) done('MathJax never started');
  else setTimeout(poll, 100);
})();
"""


def _wait_for(driver, script: str, timeout_s: float) -> list[str]:
    """Poll ``script`` until it reports nothing or ``timeout_s`` passes; its last report."""
    deadline = time.monotonic() + timeout_s
    while True:
        problems = driver.execute_script(script)
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(POLL_S)


def _network_problems(performance_log: list[dict]) -> list[str]:
    """Requests to a non-local host, and local requests that failed or got an HTTP error."""
    problems, urls = [], {}
    for entry in performance_log:
        message = json.loads(entry["message"])["message"]
        method, params = message["method"], message.get("params", {})
        if method in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            url = params["request"]["url"] if "request" in params else params["url"]
            urls[params.get("requestId")] = url
            parts = urlsplit(url)
            if parts.scheme not in NON_NETWORK_SCHEMES and parts.hostname not in LOCAL_HOSTS:
                problems.append(f"request to a non-local host: {url[:160]}")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            problems.append(f"HTTP {params['response']['status']}: {params['response']['url'][:160]}")
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            url = urls.get(params.get("requestId"), "?")
            if urlsplit(url).hostname in LOCAL_HOSTS:
                problems.append(f"local load failed ({params.get('errorText')}): {url[:160]}")
    return problems


def check_page(driver, url: str, screenshot: Path | None = None, timeout_s: float = RENDER_TIMEOUT_S) -> list[str]:
    """Open ``url`` and return every problem found (empty list: the page is fine).

    Waits for MathJax, plotly and the widget manager to finish; writes a PNG to ``screenshot``.
    """
    for log in ("browser", "performance"):
        driver.get_log(log)  # drop what the previous page left
    driver.get(url)
    # Images below the fold may be lazy; load them all so that each can be checked.
    driver.execute_script("for (const i of document.images) i.loading = 'eager';")
    problems = []
    if driver.execute_script("return document.querySelector('.math') !== null"):
        if message := driver.execute_async_script(_JS_MATHJAX_DONE, int(timeout_s * 1000)):
            problems.append(message)
    for script in (_JS_UNTYPESET_MATHS, _JS_UNDRAWN_PLOTS, _JS_UNDRAWN_WIDGETS, _JS_BAD_IMAGES):
        problems += _wait_for(driver, script, timeout_s)
    # What the reader sees once everything ran: raw tables, TeX left over, headings in outputs,
    # internal terms (the static HTML cannot show what MathJax made of the maths).
    problems += scan_html(driver.execute_script("return document.documentElement.outerHTML"))
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
    problems += [f"console {e['level']}: {e['message'][:300]}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    problems += _network_problems(driver.get_log("performance"))
    return problems


@pytest.fixture(scope="module")
def book_url():
    if not (HTML_DIR / "index.html").exists():
        _unavailable(f"{HTML_DIR} has no built book: run `make book`")
    with serve(HTML_DIR) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


@pytest.mark.parametrize("page", toc_pages())
def test_book_page_renders_offline(page, book_url, browser):
    html = HTML_DIR / f"{page}.html"
    assert html.exists(), f"{html}: page of _toc.yml missing from the build (stale or failed `make book`?)"
    problems = check_page(browser, f"{book_url}/{page}.html", SCREENSHOT_DIR / f"{Path(page).name}.png")
    assert not problems, f"{page}: {len(problems)} problem(s):\n  " + "\n  ".join(problems)


def test_toc_pages_lists_the_chapters():
    pages = toc_pages()
    assert pages[0] == "book/intro" and "book/04_fitting" in pages
    assert len(pages) == len(set(pages))


# A page with one fault of each kind: the checker must report every one of them, or the
# book test above could pass on a broken book.
_BROKEN_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="icon" href="data:,">
<script>window.MathJax = {startup: {promise: Promise.resolve()}};</script></head><body>
<span class="math">\\(x^2\\)</span>
<div class="plotly-graph-div" id="fig1"></div>
<img src="missing.png" alt="">
<img src="http://example.invalid/remote.png" alt="">
<div><script type="application/vnd.jupyter.widget-view+json">{"model_id": "m1"}</script></div>
<p>| method | rmse |
| --- | --- |</p>
<ul><li><p>the critic minimises $\\mathbb{E}[D(\\text{fake})]</p></li></ul>
<span class="math"><mjx-container><mjx-merror data-mjx-error="Missing close brace">x</mjx-merror></mjx-container></span>
<div class="cell_output docutils container"><h1>Liu et al. 2018 ablation</h1></div>
<p>The issue behind this chapter (design §3).</p>
<script>throw new Error("boom from the page");</script>
</body></html>
"""
_GOOD_PAGE = """<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>
<div class="plotly-graph-div" id="fig1"><svg class="main-svg"></svg></div>
<img src="ok.png" alt=""></body></html>
"""
SELF_TEST_TIMEOUT_S = 2  # the broken page never becomes right: do not wait a minute for it


def test_check_page_reports_each_fault(tmp_path):
    from PIL import Image

    (tmp_path / "broken.html").write_text(_BROKEN_PAGE)
    (tmp_path / "good.html").write_text(_GOOD_PAGE)
    Image.new("RGB", (2, 2), "red").save(tmp_path / "ok.png")
    with serve(tmp_path) as url, chromium() as driver:
        good = check_page(driver, f"{url}/good.html", timeout_s=SELF_TEST_TIMEOUT_S)
        broken = check_page(driver, f"{url}/broken.html", tmp_path / "shot.png", timeout_s=SELF_TEST_TIMEOUT_S)
    assert good == [], good
    text = "\n".join(broken)
    for expected in ("maths not typeset", "plotly figure #fig1 not drawn", "image not loaded: http://127.0.0.1",
                     "request to a non-local host: http://example.invalid/remote.png", "HTTP 404", "boom from the page",
                     'ipywidget not drawn: {"model_id": "m1"}', "raw Markdown table", "TeX left in the text",
                     "TeX error: Missing close brace", "MathJax error node", "heading <h1> inside a cell output",
                     "internal term 'issue'", "internal term 'design §'"):
        assert expected in text, f"missing {expected!r} in:\n{text}"
    assert (tmp_path / "shot.png").read_bytes()[:4] == b"\x89PNG"
