"""Screenshots of the web inspector for docs/inspector.md.

Creates a demo store in a temporary directory (three users, memories spread over six weeks,
sessions, every category and a fact with three versions), serves the inspector on a free loopback
port and saves, with headless Chromium at 1280x900:

- docs/img/inspector-users.png  the users page
- docs/img/inspector-user.png   a user's memories with the charts and search hits
- docs/img/inspector-chain.png  a memory's version chain

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python scripts/inspector_screenshots.py`` (needs the ``ui`` and
``local`` extras, selenium, /usr/bin/chromium and /usr/bin/chromedriver).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from headroom_integrations import MemoryEngine
from headroom_integrations.inspector import create_app

OUT = Path(__file__).resolve().parent.parent / "docs" / "img"
NOW = datetime.now(timezone.utc).replace(microsecond=0)

# (user, days ago, session, category, content)
MEMORIES = [
    ("alice", 41, "onboarding", "fact", "Works as a backend engineer on the payments team"),
    ("alice", 41, "onboarding", "preference", "Prefers Go for performance-critical services"),
    ("alice", 40, "onboarding", "preference", "Likes concise answers with code first, prose after"),
    ("alice", 38, "onboarding", "entity", "Her manager is Priya; the team lead is Tomás"),
    ("alice", 33, "incident-review", "context", "Investigating p99 latency spikes in the ledger service"),
    ("alice", 33, "incident-review", "insight", "The spikes line up with the nightly reconciliation batch"),
    ("alice", 32, "incident-review", "decision", "Move reconciliation to a read replica"),
    ("alice", 26, "api-design", "decision", "Public API uses cursor pagination, not offsets"),
    ("alice", 26, "api-design", "preference", "Wants OpenAPI specs reviewed before any code is written"),
    ("alice", 25, "api-design", "fact", "The ledger service exposes gRPC internally and REST publicly"),
    ("alice", 19, "api-design", "insight", "Idempotency keys removed most duplicate-charge tickets"),
    ("alice", 12, "offsite-planning", "fact", "Team offsite is in Lisbon in the first week of June"),
    ("alice", 12, "offsite-planning", "preference", "Vegetarian; avoid restaurants without vegetarian mains"),
    ("alice", 6, "incident-review", "decision", "Add a circuit breaker in front of the card network client"),
    ("alice", 3, "api-design", "context", "Drafting the v2 refunds endpoint"),
    ("alice", 1, None, "fact", "Is allergic to peanuts"),
    ("bob", 30, "s-morning", "preference", "Uses Python with type hints everywhere"),
    ("bob", 22, "s-morning", "fact", "Maintains the data pipeline written in Airflow"),
    ("bob", 15, "s-afternoon", "decision", "Migrating the warehouse from Redshift to BigQuery"),
    ("bob", 8, "s-afternoon", "entity", "Works with Dana from finance on the quarterly reports"),
    ("bob", 2, None, "preference", "Prefers dark mode in every tool"),
    ("carol", 20, "support-7", "context", "Customer of the enterprise plan since 2021"),
    ("carol", 9, "support-9", "preference", "Wants email, not phone calls, for follow-ups"),
]

CHAIN = [  # one fact of alice's, three versions
    (36, "Works at Google on the Ads backend"),
    (21, "Now works at Anthropic on the API platform"),
    (4, "Works at Anthropic as a staff engineer on the API platform"),
]


def _lines() -> Iterator[str]:
    for user, days, session, category, content in MEMORIES:
        at = (NOW - timedelta(days=days, hours=len(content) % 9)).isoformat()
        yield json.dumps({"content": content, "user_id": user, "session_id": session, "category": category,
                          "scope": "user" if session is None or category in ("preference", "fact") else "session",
                          "created_at": at, "importance": 0.8 if category == "preference" else 0.5})
    ids = [f"demo-chain-v{i + 1}" for i in range(len(CHAIN))]
    for i, (days, content) in enumerate(CHAIN):
        at = NOW - timedelta(days=days)
        until = None if i + 1 == len(CHAIN) else (NOW - timedelta(days=CHAIN[i + 1][0])).isoformat()
        yield json.dumps({
            "id": ids[i], "content": content, "user_id": "alice", "session_id": "onboarding", "scope": "user",
            "category": "fact", "created_at": at.isoformat(), "valid_from": at.isoformat(), "valid_to": until,
            "supersedes": ids[i - 1] if i else None, "superseded_by": ids[i + 1] if i + 1 < len(CHAIN) else None,
            "chain_id": ids[0], "importance": 0.9,
        })


@contextmanager
def _served(engine: MemoryEngine) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(engine), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                 "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def main() -> int:
    """Build the demo store, take the three screenshots, print where they went."""
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, MemoryEngine(Path(tmp) / "demo.db") as engine:
        report = engine.import_(_lines())
        print(f"demo store: {report.added} memories")
        with _served(engine) as base:
            driver = _browser()
            try:
                driver.set_window_size(1280, 900)
                inner = driver.execute_script("return window.innerHeight")
                driver.set_window_size(1280, 900 + 900 - inner)  # the page itself gets 1280x900
                shots = {
                    "inspector-users.png": f"{base}/",
                    "inspector-user.png": f"{base}/users/alice?q={quote('which language for a new service?')}",
                    "inspector-chain.png": f"{base}/memories/demo-chain-v2",
                }
                for name, url in shots.items():
                    driver.get(url)
                    driver.save_screenshot(str(OUT / name))
                    print(f"saved {OUT / name}")
            finally:
                driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
