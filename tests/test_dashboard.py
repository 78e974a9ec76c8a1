"""The status page: ``GET /``, ``/status.json``, ``/static/…``, and the page in a real browser.

The browser test runs the daemon as a ``twistd`` process and drives Debian's
``chromium`` through ``chromedriver`` with selenium, whose calls block: it is
a plain synchronous test. Outside CI it is skipped when one of them is
missing; in CI (``CI=true``) it fails instead. ``UPDATE_SCREENSHOT=1`` makes it
write ``docs/status-page.png``, the screenshot of the README.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
import treq

from notifications import __version__
from notifications.gates import gate_names
from tests.conftest import make_config, test_broker
from tests.processes import ROOT, free_port, request, running_twistd

STATIC = ROOT / "notifications" / "static"
SCREENSHOT = ROOT / "docs" / "status-page.png"

SECRET = "jenkins-door-secret-2718"
NOTIFICATION = {"service": "Deployer", "group": "ops", "type": "deploy", "text": "v2 is live"}
SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'self'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
}
RECENT_KEYS = {
    "time",
    "service",
    "project",
    "group",
    "type",
    "text",
    "link",
    "routingKey",
    "messageId",
}


async def get(url: str, method: str = "GET"):
    response = await treq.request(method, url)
    return response, await response.content()


def header(response, name: bytes) -> bytes | None:
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


# /status.json and the files, with the daemon in the test's reactor ----------------------


@pytest_twisted.ensureDeferred
async def test_status_json(daemon_factory):
    daemon = await daemon_factory(services=[{"gate": "Jenkins", "door": "Acme", "secret": SECRET}])
    for index in range(25):
        response, body = await daemon.post(
            "/gate/Notification/Acme",
            {**NOTIFICATION, "text": f"deploy {index}", "link": f"https://ci.test/{index}"},
        )
        assert response.code == 200, body

    response, body = await get(daemon.url + "/status.json")
    assert response.code == 200
    assert header(response, b"content-type") == b"application/json"
    assert header(response, b"cache-control") == b"no-store"
    assert header(response, b"x-content-type-options") == b"nosniff"
    status = json.loads(body)
    assert set(status) == {
        "version",
        "now",
        "exchange",
        "gates",
        "config",
        "broker",
        "outbox",
        "recent",
        "recentFrom",
        "doors",
        "undeclaredDoors",
        "events",
        "subscriptions",
    }
    # This site has no event streams nor subscriptions (see tests/test_subscriptions.py).
    assert (status["events"], status["subscriptions"]) == (None, [])
    assert status["recentFrom"] == "process"  # the archive is off for these tests
    assert status["version"] == __version__
    assert abs(status["now"] - time.time()) < 5
    assert status["exchange"] == daemon.config.broker.exchange
    assert status["gates"] == {"enabled": True, "names": list(gate_names())}
    assert status["config"] is True

    broker = status["broker"]
    assert broker["connected"] is True
    assert broker["since"] <= status["now"]
    assert {"reconnects", "unroutable", "unconfirmed"} <= set(broker)
    assert set(status["outbox"]) == {
        "depth",
        "in_flight",
        "in_memory",
        "published",
        "nacked",
        "oldest_age",
    }

    # The last 20, newest first.
    recent = status["recent"]
    assert [entry["text"] for entry in recent] == [f"deploy {i}" for i in range(24, 4, -1)]
    for entry in recent:
        assert set(entry) == RECENT_KEYS
        assert entry["routingKey"] == "acme.ops.deployer.deploy"
        assert (entry["project"], entry["group"], entry["service"]) == ("Acme", "ops", "Deployer")
        assert abs(entry["time"] - status["now"]) < 60
    assert recent[0]["link"] == "https://ci.test/24"
    assert len({entry["messageId"] for entry in recent}) == 20

    assert SECRET.encode() not in body
    assert b"secret" not in body.lower()
    assert b"password" not in body.lower()


@pytest_twisted.ensureDeferred
async def test_status_json_with_the_broker_down(daemon_factory):
    daemon = await daemon_factory(
        wait_for_broker=False,
        broker_config=test_broker(port=free_port()),
        toml="publish_timeout = 0.2\n",
    )
    response, body = await daemon.post("/gate/Notification/Acme", NOTIFICATION)
    assert response.code == 200, body
    assert json.loads(body)["actions"][0]["status"] == "queued"

    response, body = await get(daemon.url + "/status.json")
    assert response.code == 200
    status = json.loads(body)
    assert status["broker"]["connected"] is False
    assert status["outbox"]["depth"] == 1
    assert 0 <= status["outbox"]["oldest_age"] < 60
    [entry] = status["recent"]
    assert entry["text"] == "v2 is live"


@pytest_twisted.ensureDeferred
async def test_status_json_features_off(daemon_factory):
    daemon = await daemon_factory(toml="[features]\nGate = false\nGetConfig = false\n")
    _, body = await get(daemon.url + "/status.json")
    status = json.loads(body)
    assert status["gates"] == {"enabled": False, "names": list(gate_names())}
    assert status["config"] is False
    assert status["recent"] == []


@pytest_twisted.ensureDeferred
async def test_page_and_files_carry_the_security_headers(daemon_factory):
    daemon = await daemon_factory()
    for path, content_type in [
        ("/", b"text/html; charset=utf-8"),
        ("/static/app.js", b"text/javascript; charset=utf-8"),
        ("/static/style.css", b"text/css; charset=utf-8"),
        ("/static/favicon.svg", b"image/svg+xml"),
        ("/status.json", b"application/json"),
    ]:
        response, body = await get(daemon.url + path)
        assert response.code == 200, path
        assert header(response, b"content-type") == content_type, path
        for name, value in SECURITY_HEADERS.items():
            assert header(response, name) == value, (path, name)
        if path.startswith("/static/"):
            assert body == (STATIC / path.rsplit("/", 1)[1]).read_bytes()

    response, body = await get(daemon.url + "/")
    assert b'<script src="/static/app.js" defer></script>' in body
    assert b'href="/status"' in body
    response, body = await get(daemon.url + "/", "HEAD")
    assert response.code == 200
    assert header(response, b"content-security-policy") == b"default-src 'self'"


@pytest.mark.parametrize(
    "path",
    ["/static", "/static/", "/static/nope.js", "/static/app.js/x", "/status.json/x", "/index.html"],
)
@pytest_twisted.ensureDeferred
async def test_unknown_files_are_404(daemon_factory, path):
    daemon = await daemon_factory()
    response, _ = await get(daemon.url + path)
    assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_the_other_endpoints_are_unchanged(daemon_factory):
    daemon = await daemon_factory()
    response, body = await get(daemon.url + "/status")
    assert (response.code, body) == (200, b"ALIVE")
    response, body = await get(daemon.url + "/health")
    assert response.code == 200
    assert json.loads(body)["status"] == "ok"
    response, _ = await get(daemon.url + "/config")
    assert response.code == 200
    response, _ = await get(daemon.url + "/gate/Notification/")
    assert response.code == 405


def test_the_page_has_nothing_inline_and_never_writes_markup():
    """What the CSP would block, and what would let a notification inject markup."""
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    for script in re.findall(r"<script\b[^>]*>(.*?)</script>", page, re.S):
        assert script == ""
    assert re.search(r"<script(?![^>]*\bsrc=)", page) is None
    inline = r"\sstyle\s*=|<style\b|\son[a-z]+\s*=|=\s*[\"']?javascript:"
    assert re.search(inline, page, re.I) is None
    assert re.search(r"https?://", page) is None  # nothing from elsewhere
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert "http" not in (STATIC / "style.css").read_text(encoding="utf-8")


# The page in a real headless Chromium ---------------------------------------------------


@pytest.fixture
def daemon_process(tmp_path):
    """The daemon as ``twistd`` runs it on a free loopback port (a ``TwistdProcess``)."""
    make_config(tmp_path, test_broker())
    with running_twistd(tmp_path) as daemon:
        yield daemon


def test_the_status_page_in_a_browser(browser, daemon_process):
    """Load the page, send two notifications, see them appear, then stop the daemon."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url = daemon_process.url
    screenshot = os.environ.get("UPDATE_SCREENSHOT") == "1"
    consumer = start_consumer(daemon_process.config_path) if screenshot else None
    try:
        wait = WebDriverWait(browser, 15)
        browser.get(url + "/")
        wait.until(lambda d: d.find_element(By.ID, "broker-badge").text == "connected")
        assert "Notifications center" in browser.title
        assert browser.find_element(By.ID, "version").text == f"v{__version__}"
        gates = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#gates li")]
        assert gates == [f"POST /gate/{name}/<door>" for name in gate_names()]
        assert browser.find_element(By.ID, "recent-empty").is_displayed()

        markup = "<b>not bold</b> & <img src=x onerror=alert(1)>"
        post(url, {**NOTIFICATION, "text": markup, "link": "javascript:alert(1)"})
        link = "https://ci.acme.test/job/widgets/42/"
        post(url, jenkins("widgets #42 passed", link))
        rows_selector = "#recent-rows tr"
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, rows_selector)) == 2)
        newest, oldest = browser.find_elements(By.CSS_SELECTOR, rows_selector)

        def cell(row, name: str) -> str:
            return row.find_element(By.CSS_SELECTOR, "td." + name).text

        assert cell(newest, "what").splitlines() == [
            "widgets #42 passed",
            "Jenkins · completed.success",
        ]
        assert cell(newest, "where") == "Acme / ci"
        assert cell(newest, "key") == "acme.ci.jenkins.completed.success"
        assert re.fullmatch(r"\d\d:\d\d:\d\d", cell(newest, "time"))
        [anchor] = newest.find_elements(By.CSS_SELECTOR, "td.link a")
        assert anchor.get_attribute("href") == link
        assert anchor.text == link.removeprefix("https://")

        # The text shows as typed, no markup came of it, and the javascript: link is no link.
        assert oldest.find_element(By.CSS_SELECTOR, ".text").text == markup
        assert cell(oldest, "where") == "Acme / ops"
        assert cell(oldest, "key") == "acme.ops.deployer.deploy"
        assert oldest.find_elements(By.CSS_SELECTOR, "a, b, img") == []
        assert cell(oldest, "link") == "javascript:alert(1)"
        anchors = browser.find_elements(By.CSS_SELECTOR, "#recent-rows a")
        assert [a.get_attribute("href") for a in anchors] == [link]
        assert browser.find_element(By.ID, "recent-empty").is_displayed() is False
        assert browser.find_element(By.ID, "updated").text.startswith("Last updated ")

        # Neither a script error nor a Content-Security-Policy violation.
        problems = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert problems == []

        if screenshot:
            take_screenshot(browser, url)

        # Readable in a narrow window: no sideways scrolling, one card per notification.
        viewport(browser, 390, 844, mobile=True)
        widths = browser.execute_script(
            "const root = document.documentElement; return [root.scrollWidth, root.clientWidth]"
        )
        assert widths[0] <= widths[1] == 390, widths
        assert browser.find_element(By.CSS_SELECTOR, "#recent thead").is_displayed() is False

        # The daemon gone: the page says so, and keeps the last figures.
        shown = len(browser.find_elements(By.CSS_SELECTOR, rows_selector))
        daemon_process.stop()
        wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
        assert "does not answer" in browser.find_element(By.ID, "error").text
        assert len(browser.find_elements(By.CSS_SELECTOR, rows_selector)) == shown
    finally:
        if consumer is not None:
            consumer.terminate()
            consumer.wait(timeout=30)


def post(url: str, notification: dict, path: str = "/gate/Notification/Acme") -> dict:
    port = int(url.rsplit(":", 1)[1])
    body = json.dumps(notification).encode()
    status, content = request(port, "POST", path, body, {"Content-Type": "application/json"})
    assert status == 200, content
    return json.loads(content)


def jenkins(text: str, link: str) -> dict:
    return {
        "service": "Jenkins",
        "group": "ci",
        "type": "completed.success",
        "text": text,
        "link": link,
    }


def viewport(browser, width: int, height: int, mobile: bool = False) -> None:
    """The page's viewport, exactly (a headless window's size includes its frame)."""
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


def start_consumer(config_path: Path) -> subprocess.Popen:
    """``notifications tail`` bound to the exchange, so that nothing is unroutable."""
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "notifications"),
            "--config",
            str(config_path),
            "tail",
            "#",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stderr.readline()
    assert "listening" in line, line
    return process


#: What the screenshot shows above the test's own two notifications.
SAMPLES = [
    ("Phabricator", "tasks", "TASK", "alice closed T123: Nightly export is slow", "T123"),
    ("DockerHub", "docker", "push", "New image pushed: acme/widgets:2.4.1", "docker"),
    ("GitHub", "widgets", "pull_request", "bob opened pull request #87: Retry on 503", "pr"),
    ("GitHub", "widgets", "push", "alice pushed 2 commits to widgets (main)", "push"),
]
LINKS = {
    "T123": "https://phabricator.acme.test/T123",
    "docker": "https://hub.docker.com/r/acme/widgets",
    "pr": "https://github.com/acme/widgets/pull/87",
    "push": "https://github.com/acme/widgets/compare/1a2b3c4...5e6f7a8",
}


def take_screenshot(browser, url: str) -> None:
    """A few more notifications of each kind, then ``docs/status-page.png``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    for service, group, kind, text, link in SAMPLES:
        post(
            url,
            {"service": service, "group": group, "type": kind, "text": text, "link": LINKS[link]},
        )
    WebDriverWait(browser, 15).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recent-rows tr")) == 2 + len(SAMPLES)
    )
    time.sleep(3.5)  # the highlight of the new rows fades
    viewport(browser, 1200, 800)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    viewport(browser, 1200, height)
    time.sleep(0.3)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
