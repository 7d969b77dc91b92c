"""The dashboard in a real browser (Debian's chromium, headless, driven by Playwright) against a
real cluster: one etcd member and two agent processes with the Docker runtime, nginx and DNS
(:mod:`tests.e2e.realcluster`), real containers of the local test image.

One test walks the whole page, as an operator would, and writes a screenshot of each view to
the test artifacts (``test-artifacts/``): the services and the topology, a scale by the CLI that
shows without a reload, a failed start with its error, a hostile spec value shown as text with
no script run, actions refused without the token and done with it, the merged log of every
instance, and an agent killed and started again while the page stays open.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing
from tests.e2e.realcluster import RealCluster, real_cluster
from tests.support import browser

pytestmark = [pytest.mark.etcd, pytest.mark.docker, pytest.mark.nginx, pytest.mark.slow, pytest.mark.timeout(600)]

HOSTILE = "<img src=x onerror=alert(1)>"
# an image that is nowhere: its registry is a closed loopback port, so Docker's pull goes nowhere else
TICKER = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done"]


@pytest.fixture
def cluster(tmp_path: Path, docker_image: str) -> Iterator[RealCluster]:
    lacking = browser.available()
    if lacking:
        missing(lacking)
    with real_cluster(tmp_path, prefix=f"/dash{int(time.time() * 1000) % 10**8}", nodes=2, etcd_members=1,
                      node_prefix="w") as c:
        yield c


def svc_set(cluster: RealCluster, name: str, *args: str) -> None:
    cluster.cli("svc", "set", name, *args)


def spec_of(cluster: RealCluster, name: str) -> dict[str, Any]:
    return json.loads(cluster.cli("svc", "get", name).stdout)  # type: ignore[no-any-return]


async def shot(page: Any, name: str) -> None:
    await page.screenshot(path=str(browser.artifact(f"dashboard-{name}.png")), full_page=False)


async def text_of(page: Any, selector: str) -> str:
    return str(await page.locator(selector).inner_text())


async def test_dashboard_in_a_real_browser(cluster: RealCluster, docker_image: str) -> None:
    api = cluster.agents["w1"].addr
    base = f"http://{api.ip}:{api.api_port}"
    token = (cluster.workdir / "agents" / "api-token").read_text().strip()
    svc_set(cluster, "web.shop", "--image", docker_image, "--instances", "2", "--cmd-json", json.dumps(TICKER),
            "--env", f"NOTE={HOSTILE}", "--label", f"note={HOSTILE}")
    svc_set(cluster, "broken.shop", "--image", "127.0.0.1:9/daprdockr-test/absent:nope", "--instances", "1")

    async with browser.chromium() as chromium:
        page = await chromium.new_page(viewport={"width": 1280, "height": 800})
        dialogs: list[str] = []
        dismissing: list[asyncio.Future[None]] = []

        def on_dialog(dialog: Any) -> None:
            dialogs.append(dialog.message)
            dismissing.append(asyncio.ensure_future(dialog.dismiss()))

        page.on("dialog", on_dialog)
        console: list[str] = []
        page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
        await page.goto(f"{base}/#/services")
        try:  # (the first connection, on a machine busy with the rest of the suite: generous)
            await page.wait_for_selector("#conn.ok", timeout=60_000)
        except Exception:
            stream_error = await page.locator("#stream-error").inner_text() if await page.locator(
                "#stream-error").count() else ""
            print(f"stream error: {stream_error!r}\nconsole: {console[-20:]}")
            cluster.dump_logs(80)
            raise

        # the services, from the stream
        web = page.locator('#services tbody tr[data-service="web.shop"]')
        await web.locator("td.running", has_text="2").wait_for(timeout=60_000)
        assert (await text_of(page, '#services tbody tr[data-service="web.shop"] td.desired')).strip() == "2"
        await shot(page, "services")

        # the topology: both nodes, each instance with its state in words
        await page.click('a[data-view="topology"]')
        await page.wait_for_selector('#topology .node[data-node="w1"]')
        await page.wait_for_selector('#topology .node[data-node="w2"]')
        running = page.locator('#topology .instance[data-state="running"]')
        await running.first.wait_for()
        assert "running" in await running.first.inner_text()

        # a failed start shows as failed, with its error as text
        failed = page.locator('#topology .instance[data-key="broken.shop/1"][data-state="failed"]')
        await failed.wait_for(timeout=60_000)
        assert "absent" in await failed.inner_text()
        await shot(page, "topology")

        # scaling with the CLI shows on the open page, with no reload
        await page.evaluate("window.__notReloaded = true")
        t0 = time.monotonic()
        svc_set(cluster, "web.shop", "--instances", "3")
        await page.locator('#topology .instance[data-key="web.shop/3"]').wait_for(timeout=10_000)
        seen_after = time.monotonic() - t0
        assert await page.evaluate("window.__notReloaded === true")
        print(f"scale seen on the page {seen_after:.2f} s after the CLI started")

        # the service detail: the hostile value is text, and no script ran
        await page.goto(f"{base}/#/service/web.shop")
        await page.wait_for_selector('#detail[data-service="web.shop"]')
        await page.locator("#detail-spec", has_text="onerror").wait_for()
        assert HOSTILE in await text_of(page, "#detail-spec")
        assert await page.locator("#detail img").count() == 0
        await shot(page, "detail")

        # an action without the token is refused and changes nothing
        await page.fill("#token", "")
        await page.fill("#scale-input", "1")
        await page.click("#scale-button")
        await page.locator("#action-status", has_text="403").wait_for()
        assert spec_of(cluster, "web.shop")["instances"] == 3
        # with it, the scale is done
        await page.fill("#token", token)
        await page.fill("#scale-input", "2")
        await page.click("#scale-button")
        await page.locator("#action-status", has_text="web.shop").wait_for()
        deadline = time.monotonic() + 10
        while spec_of(cluster, "web.shop")["instances"] != 2:
            assert time.monotonic() < deadline, await text_of(page, "#action-status")
            await asyncio.sleep(0.2)

        # the merged log: lines of every instance, each with its number, following
        await page.goto(f"{base}/#/logs/web.shop")
        out = page.locator("#logs-output")
        deadline = time.monotonic() + 30
        while True:
            text = await out.inner_text()
            if "[1] tick" in text and "[2] tick" in text:
                break
            assert time.monotonic() < deadline, text[-500:]
            await asyncio.sleep(0.3)
        lines_before = text.count("\n")
        await asyncio.sleep(2)
        assert (await out.inner_text()).count("\n") > lines_before  # it follows
        await shot(page, "logs")

        # the events view lists what happened
        await page.goto(f"{base}/#/events")
        await page.locator('#events li[data-kind="failed"]').first.wait_for(timeout=10_000)
        await shot(page, "events")

        # the agent killed and started again: the page reconnects by itself and shows the new state
        await page.goto(f"{base}/#/services")
        await page.wait_for_selector("#conn.ok")
        await page.evaluate("window.__notReloaded = true")
        cluster.agents["w1"].kill()
        await page.wait_for_selector("#conn.reconnecting", timeout=10_000)
        svc_set(cluster, "later.shop", "--image", docker_image, "--instances", "0")  # written while it is down
        cluster.agents["w1"].start()
        await page.wait_for_selector("#conn.ok", timeout=60_000)
        await page.locator('#services tbody tr[data-service="later.shop"]').wait_for(timeout=15_000)
        assert await page.evaluate("window.__notReloaded === true")

        assert dialogs == [], dialogs
