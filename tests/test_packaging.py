"""The installable package: a wheel built from this tree, installed into a fresh venv, works on its own.

The wheel is built from a copy of ``pyproject.toml``, ``README.md`` and ``src/`` (so the build writes
nothing into the tree) and installed with its dependencies into a new venv, from local wheels only
(``--no-index``; no network): ``scripts/setup.sh`` keeps the host-Python wheels of the runtime
dependencies in ``.venv/wheels`` (``DAPRDOCKR_TEST_WHEELS`` names another directory).  Then the
venv's own console scripts run: ``daprdockr version`` / ``--version`` name the venv's
site-packages, ``daprdockrcmd`` and ``daprdockrd`` answer ``--help``, and a hollow agent started
from the venv runs nginx whose ``lua_package_path`` points into the venv's site-packages and whose
Lua balancer answers HTTP: 404 for an unknown host, a routed answer (no 404) for a service's host.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.versions_store import VersionStore
from daprdockr.core.endpoints import parse_endpoints
from daprdockr.core.keys import KeySchema
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from tests.conftest import ROOT, missing
from tests.e2e.realcluster import free_port_on
from tests.support.procs import terminate, wait_port

pytestmark = [pytest.mark.etcd, pytest.mark.nginx, pytest.mark.slow]

IP = "127.0.0.57"
DATA_FILES = sorted(p.relative_to(ROOT / "src").as_posix()  # the Lua module and the dashboard's static files
                    for d in ("lua", "static") for p in (ROOT / "src/daprdockr" / d).rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts)


def dependency_wheels() -> Path:
    wheels = Path(os.environ.get("DAPRDOCKR_TEST_WHEELS") or Path(sys.prefix) / "wheels")
    if not any(wheels.glob("*.whl")):
        missing(f"wheels of the dependencies in {wheels} (scripts/setup.sh builds them)")
    return wheels


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without this test run's PYTHONPATH: the venv must import its own copy."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **extra}


def run(argv: list[str], *, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    assert out.returncode == 0, f"{argv} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheels = dependency_wheels()
    tmp = tmp_path_factory.mktemp("pkg")
    tree = tmp / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    local = ["--no-index", "--find-links", str(wheels), "--disable-pip-version-check"]
    t0 = time.monotonic()
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *local, "-w", str(tmp / "dist"), str(tree)],
        env=clean_env())
    (wheel,) = (tmp / "dist").glob("daprdockr-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert any(n.endswith(".lua") for n in DATA_FILES) and any(n.endswith(".js") for n in DATA_FILES)
    assert set(DATA_FILES) <= names, f"data files missing from the wheel: {set(DATA_FILES) - names}"
    assert "daprdockr/py.typed" in names
    built = time.monotonic()
    env_dir = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin/python"), "install", "-q", *local, str(wheel)],
        env=clean_env())
    print(f"\nwheel built in {built - t0:.1f}s, venv with its dependencies in {time.monotonic() - built:.1f}s",
          file=sys.stderr)
    return env_dir


def site_packages(env_dir: Path) -> Path:
    out = run([str(env_dir / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
              env=clean_env())
    return Path(out.stdout.strip())


def test_the_venv_commands_report_their_versions(venv: Path, etcd_endpoints: str) -> None:
    package = site_packages(venv) / "daprdockr"
    for name in DATA_FILES:
        assert (package.parent / name).is_file(), name
    for argv in (["version"], ["--version"]):
        out = run([str(venv / "bin/daprdockr"), "--etcd", etcd_endpoints, *argv], env=clean_env(), cwd="/")
        lines = {line.split()[0]: line for line in out.stdout.splitlines()}
        assert set(lines) == {"daprdockr", "etcd", "docker", "nginx"}, out.stdout
        assert f", {package}, lua {package / 'lua'})" in lines["daprdockr"], lines["daprdockr"]
        assert f"(server at {etcd_endpoints})" in lines["etcd"], lines["etcd"]
    for script in ("daprdockrcmd", "daprdockrd"):
        out = subprocess.run([str(venv / "bin" / script), "-h"], capture_output=True, text=True, timeout=60,
                             env=clean_env(), cwd="/")
        assert "-etcd" in out.stdout + out.stderr, (script, out)
    completion = run([str(venv / "bin/daprdockr"), "--show-completion", "bash"], env=clean_env(
        _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1"), cwd="/")
    assert "_DAPRDOCKR_COMPLETE" in completion.stdout, completion.stdout


def http_status(port: int, host: str) -> int:
    conn = http.client.HTTPConnection(IP, port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": host})
        return conn.getresponse().status
    finally:
        conn.close()


async def test_an_agent_from_the_venv_serves_http_through_the_installed_lua(
    venv: Path, etcd_endpoints: str, prefix: str, tmp_path: Path
) -> None:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None or not Path("/usr/lib/nginx/modules/ngx_http_lua_module.so").is_file():
        missing("nginx with its Lua module")
    http_port = free_port_on(IP)
    state = tmp_path / "state"
    log = tmp_path / "agent.log"
    agent = subprocess.Popen(  # noqa: ASYNC220 - started once, before the loop matters
        [str(venv / "bin/daprdockr"), "agent", "--runtime", "hollow", "--hollow-start-delay", "0.01",
         "--node-id", "pk1", "--advertise-ip", IP, "--ttl", "5", "--state-dir", str(state),
         "--dns-listen", f"{IP}:{free_port_on(IP)}", "--dns-workers", "0", "--http-listen", f"{IP}:{http_port}",
         "--api-listen", f"{IP}:{free_port_on(IP)}", "--rebalance", "off", "--nginx", nginx],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd="/",
        env=clean_env(DAPRDOCKR_ETCD=etcd_endpoints, DAPRDOCKR_PREFIX=prefix))
    try:
        wait_port(IP, http_port, timeout=60, proc=agent, log=log)
        conf = state / "pk1" / "nginx" / "nginx.conf"
        deadline = time.monotonic() + 30
        while not conf.is_file():
            assert time.monotonic() < deadline, f"no {conf}: {sorted(map(str, state.rglob('*')))}"
            await asyncio.sleep(0.1)
        lua = site_packages(venv) / "daprdockr" / "lua"
        assert f'lua_package_path "{lua}/?.lua;;";' in conf.read_text(), conf.read_text()
        web = ServiceName.parse("web.pkg")
        async with EtcdStore(endpoints=parse_endpoints(etcd_endpoints), schema=KeySchema(prefix)) as store:
            await VersionStore(store).put_service(ServiceSpec.from_dict(
                {"image": "hollow", "instances": 1, "http_port": 8080, "http_host": "web.pkg.test"}, name=web))
            deadline = time.monotonic() + 60
            while True:  # the hollow instance's port has no listener: routed, it is no 404
                routed = await asyncio.to_thread(http_status, http_port, "web.pkg.test")
                if routed != 404:
                    break
                assert time.monotonic() < deadline, f"never routed; {log.read_text()[-2000:]}"
                await asyncio.sleep(0.3)
            unknown = await asyncio.to_thread(http_status, http_port, "nobody.pkg.test")
            print(f"\nnginx from {lua}: web.pkg.test -> {routed}, nobody.pkg.test -> {unknown}", file=sys.stderr)
            assert unknown == 404
            assert routed in (502, 503), routed
            await VersionStore(store).delete_service(web)
    finally:
        terminate(agent, grace=20)
    assert agent.returncode == 0, log.read_text()[-2000:]
