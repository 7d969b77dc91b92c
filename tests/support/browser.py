"""A real headless browser for the dashboard's tests: Debian's chromium driven by Playwright.

Playwright's Python package talks to the system chromium (``/usr/lib/chromium/chromium``, the
binary behind Debian's ``/usr/bin/chromium`` wrapper); its own browser download (``playwright
install``) is never used.  The flags keep chromium off the network (this machine's network is
closed) and let it run as root.  Screenshots go to ``DAPRDOCKR_TEST_ARTIFACTS`` (default
``test-artifacts/`` in the repository, where CI keeps test output).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("DAPRDOCKR_CHROMIUM", "/usr/lib/chromium/chromium"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(os.environ.get("DAPRDOCKR_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


def available() -> str:
    """"" when a browser can run here, else what is missing."""
    if not CHROMIUM.exists():
        return f"chromium ({CHROMIUM})"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright Python package"
    return ""


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A launched headless chromium (a Playwright ``Browser``), closed after."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
