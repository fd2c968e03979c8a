import os
import shutil

import pytest

from tests.prereq import require

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "artifacts", "browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _missing():
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append("chromium (apt chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("playwright (pip)")
    if os.geteuid() != 0:
        missing.append("root")
    if shutil.which("dbus-daemon") is None:
        missing.append("dbus-daemon")
    return missing


@pytest.fixture(scope="module")
def browser():
    """Per module: Playwright's sync API keeps an asyncio loop marked running
    while it lives, which would break asyncio.run() in every later test."""
    require("browser", _missing())
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def shot():
    """shot(page, name): saves a PNG of what the test checked, for a person to look at."""
    os.makedirs(ARTIFACTS, exist_ok=True)

    def save(page, name):
        page.screenshot(path=os.path.join(ARTIFACTS, f"{name}.png"), full_page=True)
    return save
