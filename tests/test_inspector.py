"""The web inspector, driven by headless Chromium over real stores (SQLite and PostgreSQL).

Each test serves ``create_app`` with uvicorn on a free loopback port over the ``engine`` fixture's
store, seeded with a few users, sessions, categories, a three-version chain and hostile text. The
browser is shared by the module; what a click changed is checked in the store through a second
engine. POST protection (CSRF token, origin, host, read-only) is checked with httpx directly.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from headroom_integrations import MemoryEngine, MemoryFilter
from headroom_integrations.inspector import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="the inspector's browser tests need Chromium and chromedriver (Debian: apt install chromium chromium-driver)",
)

HOSTILE_USER = "eve/<b>\"x\" & 'y'</b>"
HOSTILE = "<script>window.__pwned = 1</script>\t\"quoted\" & 'single'\n<img src=x onerror=\"window.__pwned = 2\"> 😀"
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Site:
    """A served inspector and the seeded memories' ids."""

    url: str
    chain: list[str]  # the fact's three versions, oldest first
    tea: str  # bob's single-version memory
    hostile: str


def seed(engine: MemoryEngine) -> Site:
    """Two ordinary users, one hostile one, sessions, several categories and a 3-version chain."""
    engine.add("Prefers Go for performance-critical code", user_id="alice", session_id="s1", scope="user",
               category="preference")
    engine.add("Working on the payments service this sprint", user_id="alice", session_id="s1", category="context")
    engine.add("Chose PostgreSQL for the ledger", user_id="alice", session_id="s2", category="decision")
    engine.add("Lunch with Dana on Friday", user_id="alice", session_id="s2", category="context")
    v1 = engine.add("Works at Google", user_id="alice", category="fact")
    v2 = engine.supersede(v1.id, "Works at Anthropic")
    v3 = engine.supersede(v2.id, "Works at Anthropic as a staff engineer")
    tea = engine.add("Likes green tea", user_id="bob", category="preference")
    engine.add("Uses vim", user_id="bob", session_id="s3", category="fact")
    hostile = engine.add(HOSTILE, user_id=HOSTILE_USER, session_id="<i>s</i>", category="insight",
                         metadata={"note": "</pre><script>window.__pwned = 3</script>"})
    return Site("", [v1.id, v2.id, v3.id], tea.id, hostile.id)


@contextmanager
def served(engine: MemoryEngine, read_only: bool = False) -> Iterator[str]:
    """Serve the inspector in a background thread on a free 127.0.0.1 port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(engine, read_only=read_only), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the inspector did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


@pytest.fixture
def site(engine: MemoryEngine) -> Iterator[Site]:
    seeded = seed(engine)
    with served(engine) as url:
        seeded.url = url
        yield seeded


@pytest.fixture
def checker(make_engine: Callable[..., MemoryEngine]) -> MemoryEngine:
    """A second engine on the same store: what the database holds after a click."""
    return make_engine()


def wait_css(driver: WebDriver, css: str) -> None:
    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, css))


def click_and_wait(driver: WebDriver, element: object, css: str) -> None:
    """Click, then wait until the next page (which shows ``css``) has loaded."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()  # type: ignore[attr-defined]
    WebDriverWait(driver, 10).until(lambda d: old != d.find_element(By.TAG_NAME, "html"))
    wait_css(driver, css)


def texts(driver: WebDriver, css: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def submit_filters(driver: WebDriver, **choices: str) -> None:
    for name, value in choices.items():
        Select(driver.find_element(By.NAME, name)).select_by_value(value)
    click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]"), "#matched")


def test_users_page_shows_counts_and_links(site: Site, browser: WebDriver) -> None:
    browser.get(site.url + "/")
    rows = {r.get_attribute("data-user"): r for r in browser.find_elements(By.CSS_SELECTOR, "table.users tbody tr")}
    assert list(rows) == sorted(["alice", "bob", HOSTILE_USER])
    assert [rows["alice"].find_element(By.CSS_SELECTOR, c).text for c in (".total", ".current")] == ["7", "5"]
    assert [rows["bob"].find_element(By.CSS_SELECTOR, c).text for c in (".total", ".current")] == ["2", "2"]
    assert browser.find_element(By.ID, "stat-total").text == "10"
    assert browser.find_element(By.ID, "stat-current").text == "8"
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart rect")) >= 4  # category and scope bars
    click_and_wait(browser, rows[HOSTILE_USER].find_element(By.TAG_NAME, "a"), "h1.user-id")
    assert browser.find_element(By.CSS_SELECTOR, "h1.user-id").text == HOSTILE_USER  # the id survives the URL


def test_user_page_filters_by_category_session_and_versions(site: Site, browser: WebDriver) -> None:
    browser.get(f"{site.url}/users/alice")
    assert browser.find_element(By.ID, "matched").text == "5"
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 2
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart rect")) >= 5
    submit_filters(browser, category="context")
    assert sorted(texts(browser, "table.memories td.content")) == [
        "Lunch with Dana on Friday", "Working on the payments service this sprint"]
    submit_filters(browser, session="s2")  # context and s2
    assert texts(browser, "table.memories td.content") == ["Lunch with Dana on Friday"]
    submit_filters(browser, category="", session="", versions="all")
    assert browser.find_element(By.ID, "matched").text == "7"
    old = texts(browser, "table.memories tr.old td.content")
    assert sorted(old) == ["Works at Anthropic", "Works at Google"]
    submit_filters(browser, scope="session", versions="current")
    assert sorted(texts(browser, "table.memories td.content")) == [
        "Chose PostgreSQL for the ledger", "Lunch with Dana on Friday", "Working on the payments service this sprint"]


def test_search_shows_hits_with_score_parts(site: Site, browser: WebDriver) -> None:
    browser.get(f"{site.url}/users/alice")
    box = browser.find_element(By.NAME, "q")
    box.send_keys("which language for performance-critical code?")
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]"), "#search")
    hits = browser.find_elements(By.CSS_SELECTOR, "table.hits tr.hit")
    assert hits, "no search hits shown"
    assert "Prefers Go" in hits[0].find_element(By.CSS_SELECTOR, "td.content").text
    number = re.compile(r"^(-?\d+\.\d{3}|\u2013)$")  # a dash when the engine does not report a part
    for css in (".score-cosine", ".score-fused", ".score-vector", ".score-keyword", ".score-context"):
        assert number.match(hits[0].find_element(By.CSS_SELECTOR, css).text), css
    assert float(hits[0].find_element(By.CSS_SELECTOR, ".score-fused").text) > 0
    assert browser.find_element(By.NAME, "q").get_attribute("value") == "which language for performance-critical code?"


def test_chain_page_shows_the_timeline(site: Site, browser: WebDriver) -> None:
    browser.get(f"{site.url}/memories/{site.chain[1]}")
    versions = browser.find_elements(By.CSS_SELECTOR, "ol.timeline li.version")
    assert [v.get_attribute("data-id") for v in versions] == site.chain
    assert [v.find_element(By.CSS_SELECTOR, ".version-content").text for v in versions] == [
        "Works at Google", "Works at Anthropic", "Works at Anthropic as a staff engineer"]
    assert "is-current" in versions[2].get_attribute("class")
    assert "is-this" in versions[1].get_attribute("class")
    assert len(browser.find_elements(By.CSS_SELECTOR, "ol.timeline button.rollback")) == 2  # not on the current one


def test_forget_removes_the_memory_from_the_store(site: Site, browser: WebDriver, checker: MemoryEngine) -> None:
    browser.get(f"{site.url}/memories/{site.tea}")
    browser.find_element(By.CSS_SELECTOR, "details.forget summary").click()
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "button.forget-one"), ".flash")
    assert browser.current_url.startswith(f"{site.url}/users/bob")
    assert "Forgot version" in browser.find_element(By.CSS_SELECTOR, ".flash").text
    assert checker.get(site.tea) is None
    assert [m.content for m in checker.query(MemoryFilter(user_id="bob"))] == ["Uses vim"]


def test_forget_all_versions_removes_the_chain(site: Site, browser: WebDriver, checker: MemoryEngine) -> None:
    browser.get(f"{site.url}/memories/{site.chain[2]}")
    browser.find_element(By.CSS_SELECTOR, "details.forget summary").click()
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "button.forget-all"), ".flash")
    assert browser.current_url.startswith(f"{site.url}/users/alice")
    assert all(checker.get(i) is None for i in site.chain)
    assert browser.find_element(By.ID, "user-total").text == "4"


def test_roll_back_makes_an_older_version_current(site: Site, browser: WebDriver, checker: MemoryEngine) -> None:
    browser.get(f"{site.url}/memories/{site.chain[0]}")
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, ".actions button.rollback"), ".flash")
    history = checker.get_history(site.chain[0])
    current = [m for m in history if m.is_current]
    assert len(history) == 4 and len(current) == 1
    assert current[0].content == "Works at Google" and current[0].metadata["rolled_back_to"] == site.chain[0]
    assert browser.current_url.startswith(f"{site.url}/memories/{current[0].id}")
    assert browser.find_element(By.ID, "content").text == "Works at Google"
    assert len(browser.find_elements(By.CSS_SELECTOR, "ol.timeline li.version")) == 4


def _token(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200
    match = TOKEN.search(page.text)
    assert match, "no CSRF field on the page"
    return match.group(1)


def test_posts_need_the_csrf_token_and_same_origin(site: Site, checker: MemoryEngine) -> None:
    forget = f"/memories/{site.tea}/forget"
    with httpx.Client(base_url=site.url) as client:
        assert client.post(forget).status_code == 403  # no token, no cookie
        with httpx.Client(base_url=site.url, cookies={"headroom_csrf": "forged"}) as forger:  # a planted cookie
            assert forger.post(forget, data={"csrf_token": "forged"}).status_code == 403
        token = _token(client, f"/memories/{site.tea}")  # the client now holds the cookie too
        assert client.post(forget, data={"csrf_token": token + "x"}).status_code == 403
        evil = {"origin": "https://evil.example"}
        assert client.post(forget, data={"csrf_token": token}, headers=evil).status_code == 403
        referer = {"referer": "https://evil.example/page"}
        assert client.post(forget, data={"csrf_token": token}, headers=referer).status_code == 403
        with httpx.Client(base_url=site.url) as stranger:  # the right field but no cookie
            assert stranger.post(forget, data={"csrf_token": token}).status_code == 403
        assert client.get("/", headers={"host": "rebound.example:80"}).status_code == 400  # DNS rebinding
        assert checker.get(site.tea) is not None  # nothing above changed the store
        same = {"origin": site.url}
        done = client.post(forget, data={"csrf_token": token}, headers=same)
        assert done.status_code == 303 and done.headers["location"].startswith("/users/bob?")
    assert checker.get(site.tea) is None


def test_engine_errors_are_readable_pages(site: Site) -> None:
    with httpx.Client(base_url=site.url) as client:
        token = _token(client, f"/memories/{site.chain[2]}")
        current = client.post(f"/memories/{site.chain[2]}/rollback", data={"csrf_token": token})
        assert current.status_code == 400 and "already the current version" in current.text
        assert client.post("/memories/nope/rollback", data={"csrf_token": token}).status_code == 404
        assert client.post("/memories/nope/forget", data={"csrf_token": token}).status_code == 404
        missing = client.get("/memories/no-such-id")
        assert missing.status_code == 404 and "no memory with id" in missing.text
        assert client.get("/no/such/page").status_code == 404
        nobody = client.get("/users/nobody")
        assert nobody.status_code == 200 and 'id="no-memories"' in nobody.text
        assert client.get("/users/alice?category=bogus").status_code == 400
        assert client.get("/").headers["content-security-policy"].startswith("default-src 'none'")


def test_read_only_hides_buttons_and_refuses_posts(engine: MemoryEngine, browser: WebDriver,
                                                   checker: MemoryEngine) -> None:
    seeded = seed(engine)
    with served(engine, read_only=True) as url:
        browser.get(f"{url}/memories/{seeded.chain[1]}")
        assert browser.find_elements(By.CSS_SELECTOR, "ol.timeline li.version")
        assert browser.find_elements(By.CSS_SELECTOR, "form[method=post]") == []
        assert browser.find_elements(By.CSS_SELECTOR, "button.rollback, button.forget-one, details.forget") == []
        assert browser.find_element(By.CSS_SELECTOR, ".badge-ro").text == "read-only"
        with httpx.Client(base_url=url) as client:
            client.get("/")
            token = client.cookies["headroom_csrf"]
            for action in ("forget", "rollback"):
                answer = client.post(f"/memories/{seeded.chain[0]}/{action}", data={"csrf_token": token})
                assert answer.status_code == 403
    assert len(checker.get_history(seeded.chain[0])) == 3
    assert checker.get(seeded.chain[0]) is not None


def test_hostile_content_is_shown_as_text(site: Site, browser: WebDriver) -> None:
    browser.get(f"{site.url}/users/{quote(HOSTILE_USER, safe='')}?q={quote(HOSTILE)}")
    wait_css(browser, "#search")
    assert browser.execute_script("return window.__pwned === undefined")
    shown = browser.find_element(By.CSS_SELECTOR, "table.memories td.content").get_attribute("textContent")
    assert shown == HOSTILE
    assert browser.find_element(By.NAME, "q").get_attribute("value") == HOSTILE.replace("\n", "")  # a one-line box
    assert browser.find_elements(By.CSS_SELECTOR, "main script, main img") == []
    browser.get(f"{site.url}/memories/{quote(site.hostile, safe='')}")
    assert browser.find_element(By.ID, "content").get_attribute("textContent") == HOSTILE
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.find_elements(By.CSS_SELECTOR, "script, main img") == []
    assert "</pre><script>" in browser.find_element(By.CSS_SELECTOR, "details.metadata pre").get_attribute("textContent")
