"""The dashboard: first render, the live update's delay, and the stream's cost per connected browser.

One etcd member (Debian's etcd-server) on loopback holds a cluster of ``--sizes`` instances (100
node records on their leases, services of 100 instances: ``scale_bench.cluster``), and one hollow
agent, drained so that it takes nothing, serves its API and dashboard on 127.0.0.1.  A real
headless chromium (Debian's, driven by Playwright) opens the page.  Measured, each beside its
baseline in the same run:

* **first render**: from ``page.goto`` until the services table has every row and the stream is
  live (``#conn.ok``), and until the topology has drawn every node; beside the agent's
  ``GET /v1/status`` and ``GET /v1/dashboard`` JSON fetched by a plain HTTP client (aiohttp);
* **update delay**: from the etcd write of a service's new ``instances`` (``VersionStore``, the
  CLI's path) until the page's cell shows it (``--updates`` writes; median and max);
* **per-browser cost**: the agent's CPU (``daprdockr_process_cpu_seconds_total``) during
  ``--churn-seconds`` of 10 spec changes per second with no page open, then with ``--pages``
  pages (one chromium) following the stream.

Targets (issue 28): first render <= 1 s at 10 000 instances; update visible <= 1 s after the etcd
write; 20 connected browsers add <= 10 % agent CPU under a churn of 10 events/s.

    .venv/bin/python bench/dashboard_bench.py [--sizes 100,10000] [--pages 20] [--churn-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import benchlib  # noqa: F401  (puts the repository on sys.path, for tests.support)
from scale_bench import PER_SERVICE
from scale_cli_bench import drained_agent, fill
from tests.support import browser
from tests.support.procs import etcd_cluster

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName

CPU = "daprdockr_process_cpu_seconds_total"


async def agent_cpu(session: aiohttp.ClientSession, api: str) -> float:
    async with session.get(f"http://{api}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(CPU + " "):
                return float(line.split()[1])
    raise AssertionError(f"{CPU} not in the agent's metrics")


async def fetch_time(session: aiohttp.ClientSession, url: str, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        async with session.get(url) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def first_render(chromium: Any, base: str, *, last_node: str) -> tuple[float, float, float]:
    """Seconds from ``goto`` until the services table is drawn from a live stream, the page's own
    figure for the same (``html[data-first-render-ms]``, from navigation start), and seconds from
    the click until the topology has drawn its last node.  (Selectors, not ``wait_for_function``:
    the page's CSP forbids the eval that one needs.)"""
    page = await chromium.new_page(viewport={"width": 1280, "height": 800})
    try:
        t0 = time.perf_counter()
        await page.goto(f"{base}/#/services")
        await page.wait_for_selector("#conn.ok", timeout=60_000)
        await page.wait_for_selector("#services tbody tr[data-service]", timeout=60_000)
        services_at = time.perf_counter() - t0
        own = float(await page.get_attribute("html", "data-first-render-ms") or "nan") / 1000
        t0 = time.perf_counter()
        await page.click('a[data-view="topology"]')
        await page.wait_for_selector(f'#topology .node[data-node="{last_node}"]', timeout=60_000)
        return services_at, own, time.perf_counter() - t0
    finally:
        await page.close()


Change = Callable[[ServiceSpec | None, str | None], ServiceSpec]


def scaled_to(instances: int) -> Change:
    def change(current: ServiceSpec | None, _problem: str | None) -> ServiceSpec:
        assert current is not None
        return replace(current, instances=instances)
    return change


def with_env(key: str, value: str) -> Change:
    def change(current: ServiceSpec | None, _problem: str | None) -> ServiceSpec:
        assert current is not None
        return replace(current, env=tuple(sorted({**dict(current.env), key: value}.items())))
    return change


WATCH_CELL = """([selector, want]) => {
    window.__seenAt = 0;
    const seen = () => {
        if (!window.__seenAt && document.querySelector(selector)?.textContent.trim() === want) {
            window.__seenAt = Date.now();
        }
    };
    new MutationObserver(seen).observe(document.body, {childList: true, subtree: true, characterData: true});
    seen();
}"""


async def update_delays(chromium: Any, base: str, store: EtcdStore, name: ServiceName, *, count: int) -> list[float]:
    """Seconds from the etcd write of a new ``instances`` until the page's cell shows it (the page
    notes the moment with a MutationObserver, on the same clock as ``time.time()``)."""
    page = await chromium.new_page()
    versions = VersionStore(store)
    delays = []
    try:
        await page.goto(f"{base}/#/services")
        cell = f'#services tbody tr[data-service="{name}"] td.desired'
        await page.wait_for_selector(cell, timeout=60_000)
        await page.wait_for_selector("#conn.ok")
        for i in range(count):
            want = PER_SERVICE + 1 + i
            await page.evaluate(WATCH_CELL, [cell, str(want)])
            written = time.time()
            await versions.update_service(name, scaled_to(want))
            deadline = time.monotonic() + 30
            while not (seen := await page.evaluate("window.__seenAt")):
                assert time.monotonic() < deadline, f"{name} never showed {want}"
                await asyncio.sleep(0.01)
            delays.append(seen / 1000 - written)
            await asyncio.sleep(0.2)
    finally:
        await page.close()
    return delays


async def churn_cpu(session: aiohttp.ClientSession, api: str, store: EtcdStore, name: ServiceName,
                    *, seconds: float) -> float:
    """The agent's CPU seconds per second while one spec changes 10 times a second."""
    versions = VersionStore(store)
    cpu0, t0 = await agent_cpu(session, api), time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < seconds:
        i += 1
        tick = time.perf_counter()
        await versions.update_service(name, with_env("CHURN", str(i)))
        await asyncio.sleep(max(0.0, 0.1 - (time.perf_counter() - tick)))
    return (await agent_cpu(session, api) - cpu0) / (time.perf_counter() - t0)


async def measure(endpoints: str, prefix: str, api: str, *, size: int, pages: int, updates: int,
                  churn_seconds: float) -> dict[str, Any]:
    schema = KeySchema(prefix)
    base = f"http://{api}"
    async with EtcdStore(endpoints=parse_endpoints(endpoints), schema=schema, timeout=30.0) as store, \
            aiohttp.ClientSession() as session, browser.chromium() as chromium:
        state = await store.snapshot()
        first = sorted(state.services, key=str)[0]
        status_s = await fetch_time(session, f"{base}/v1/status")
        model_s = await fetch_time(session, f"{base}/v1/dashboard")
        last_node = max(state.nodes)
        renders = [await first_render(chromium, base, last_node=last_node) for _ in range(3)]
        delays = await update_delays(chromium, base, store, first, count=updates)
        churned = sorted(state.services, key=str)[-1]
        idle = await churn_cpu(session, api, store, churned, seconds=churn_seconds)
        open_pages = []
        for _ in range(pages):
            page = await chromium.new_page()
            await page.goto(f"{base}/#/services")
            open_pages.append(page)
        for page in open_pages:
            await page.wait_for_selector("#conn.ok", timeout=60_000)
        with_pages = await churn_cpu(session, api, store, churned, seconds=churn_seconds)
        for page in open_pages:
            await page.close()
    return {"status": status_s, "model": model_s, "render": statistics.median(r[0] for r in renders),
            "own": statistics.median(r[1] for r in renders),
            "topology": statistics.median(r[2] for r in renders), "delay_p50": statistics.median(delays),
            "delay_max": max(delays), "cpu_idle": idle, "cpu_pages": with_pages}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,10000")
    ap.add_argument("--pages", type=int, default=20)
    ap.add_argument("--updates", type=int, default=10)
    ap.add_argument("--churn-seconds", type=float, default=20.0)
    args = ap.parse_args()
    lacking = browser.available()
    if lacking:
        raise SystemExit(f"dashboard_bench needs {lacking}")
    print(f"# dashboard_bench {datetime.now().isoformat(timespec='seconds')}: 1 etcd member, 100 nodes, one drained "
          f"hollow agent serving the page; {args.pages} pages for the stream's cost; churn 10 spec changes/s")
    print(f"{'instances':>10} {'/v1/status':>11} {'/v1/dashboard':>14} {'first render':>13} {'(page)':>7} "
          f"{'topology':>9} "
          f"{'update p50':>11} {'update max':>11} {'agent CPU, 0 pages':>19} {f'{args.pages} pages':>10} {'added':>7}")
    with tempfile.TemporaryDirectory() as tmp, etcd_cluster(Path(tmp)) as etcd:
        for size in (int(s) for s in args.sizes.split(",")):
            prefix = f"/dash-{uuid.uuid4().hex[:8]}"
            asyncio.run(fill(etcd.endpoints, prefix, size))
            with drained_agent(etcd.endpoints, prefix, Path(tmp)) as api:
                m = asyncio.run(measure(etcd.endpoints, prefix, api, size=size, pages=args.pages,
                                        updates=args.updates, churn_seconds=args.churn_seconds))
            added = m["cpu_pages"] - m["cpu_idle"]
            print(f"{size:>10} {m['status']:>10.3f}s {m['model']:>13.3f}s {m['render']:>12.3f}s {m['own']:>6.3f}s "
                  f"{m['topology']:>8.3f}s "
                  f"{m['delay_p50']:>10.3f}s {m['delay_max']:>10.3f}s {m['cpu_idle'] * 100:>18.1f}% "
                  f"{m['cpu_pages'] * 100:>9.1f}% {added * 100:>6.1f}%")


if __name__ == "__main__":
    main()
