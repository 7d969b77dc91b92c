"""``daprdockr agent --config FILE`` and ``--print-config``: every flag is a key, flag > env > file >
default, unknown keys and wrong types refused with their line (typer's CliRunner, the real CLI)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from daprdockr.cli.main import app

ENV_CLEAR: dict[str, str | None] = {name: None for name in (
    "DAPRDOCKR_ETCD", "DAPRDOCKR_PREFIX", "DAPRDOCKR_API_TOKEN_FILE", "DAPRDOCKR_ETCD_CACERT", "DAPRDOCKR_ETCD_CERT",
    "DAPRDOCKR_ETCD_KEY", "DAPRDOCKR_ETCD_USER", "DAPRDOCKR_ETCD_PASSWORD_FILE")}
# the options that are not agent settings: the file's own two, the CLI's per-call etcd timeout, completion
NOT_SETTINGS = {"config", "print_config", "timeout", "install_completion", "show_completion", "help"}


def print_config(*args: str, env: dict[str, str] | None = None) -> dict[str, tuple[Any, str]]:
    """Run ``daprdockr [globals] agent ... --print-config``: key -> (value, source)."""
    r = CliRunner().invoke(app, [*args, "--print-config"], env={**ENV_CLEAR, **(env or {})})
    assert r.exit_code == 0, r.output
    out: dict[str, tuple[Any, str]] = {}
    for line in r.stdout.splitlines():
        unset = re.fullmatch(r"# (\w+) +\(unset\)  # (\w+)", line)
        if unset:
            out[unset[1]] = (None, unset[2])
            continue
        name, _, rest = line.partition("=")
        value, _, source = rest.rpartition("  # ")
        out[name.strip()] = (tomllib.loads(f"v = {value}")["v"], source)
    return out


def agent_flags() -> dict[str, Any]:
    """Every option of ``daprdockr agent`` and of the global options, as the CLI parser has them."""
    command = typer.main.get_command(app)
    agent = command.commands["agent"]  # type: ignore[attr-defined]
    return {p.name: p for p in [*command.params, *agent.params] if p.name not in NOT_SETTINGS}


def value_for(param: Any) -> Any:
    """A value of the option's type that is not its default."""
    kind = param.type_descriptor.annotation
    name = param.name
    if param.multiple:
        return [f"/l/{name}"]
    if param.is_flag:
        return not param.default
    if param.count or kind is int:
        return 3 if param.default != 3 else 4
    if kind is float:
        return 2.5
    if kind is Path:
        return f"/p/{name}"
    assert kind is str, (name, kind)
    return f"v-{name}"


def test_every_flag_is_a_key_of_the_file(tmp_path: Path) -> None:
    params = agent_flags()
    assert {"node_id", "dns_listen", "allow_bind", "etcd", "prefix", "keep_on_exit", "api_token_file"} <= set(params)
    values = {name: value_for(p) for name, p in params.items()}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({n.replace("_", "-"): v for n, v in values.items()}))
    shown = print_config("agent", "--config", str(tmp_path / "a.yaml"))
    assert set(shown) == set(params)
    for name, value in values.items():
        assert shown[name] == (value, "file"), name


@pytest.mark.parametrize("with_file", [False, True])
def test_precedence_flag_env_file_default(tmp_path: Path, with_file: bool) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('etcd = "http://file:2379"\napi-token-file = "/file/token"\nttl = 9\nnode_id = "from-file"\n')
    file = ["--config", str(config)] if with_file else []
    env = {"DAPRDOCKR_ETCD": "http://env:2379", "DAPRDOCKR_API_TOKEN_FILE": "/env/token"}

    defaults = print_config("agent", *file)
    if with_file:
        assert defaults["etcd"] == ("http://file:2379", "file")
        assert defaults["api_token_file"] == ("/file/token", "file")
        assert defaults["ttl"] == (9, "file") and defaults["node_id"] == ("from-file", "file")
    else:
        assert defaults["etcd"] == ("http://127.0.0.1:2379", "default")
        assert defaults["api_token_file"] == (None, "default")
        assert defaults["ttl"] == (5, "default") and defaults["node_id"] == (None, "default")
    assert defaults["dns_ttl"] == (5, "default")

    from_env = print_config("agent", *file, env=env)
    assert from_env["etcd"] == ("http://env:2379", "env")
    assert from_env["api_token_file"] == ("/env/token", "env")

    flags = print_config("--etcd", "http://flag:2379", "agent", *file, "--api-token-file", "/flag/token",
                         "--ttl", "4", "--node-id", "from-flag", env=env)
    assert flags["etcd"] == ("http://flag:2379", "flag")
    assert flags["api_token_file"] == ("/flag/token", "flag")
    assert flags["ttl"] == (4, "flag") and flags["node_id"] == ("from-flag", "flag")


def test_a_flag_equal_to_its_default_still_wins_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("ttl = 9\nkeep-on-exit = true\n")
    shown = print_config("agent", "--config", str(config), "--ttl", "5", "--no-keep-on-exit")
    assert shown["ttl"] == (5, "flag") and shown["keep_on_exit"] == (False, "flag")


def test_printed_configuration_is_a_config_file(tmp_path: Path) -> None:
    first = print_config("--prefix", "/x", "agent", "--node-id", "n7", "--allow-bind", "/srv", "--drain-on-shutdown")
    r = CliRunner().invoke(app, ["--prefix", "/x", "agent", "--node-id", "n7", "--allow-bind", "/srv",
                                 "--drain-on-shutdown", "--print-config"], env=ENV_CLEAR)
    (tmp_path / "printed.toml").write_text(r.stdout)
    again = print_config("agent", "--config", str(tmp_path / "printed.toml"))
    assert {k: v for k, (v, _) in again.items()} == {k: v for k, (v, _) in first.items()}
    assert {source for name, (value, source) in again.items() if value is not None} == {"file"}


@pytest.mark.parametrize(("name", "text", "message"), [
    ("a.toml", 'node-id = "n1"\n\n# the DNS address\ndns_listn = "127.0.0.1:53"\n',
     r"a\.toml:4: unknown key 'dns_listn'"),
    ("a.yaml", "node-id: n1\nttl: 5\nbogus: true\n", r"a\.yaml:3: unknown key 'bogus'"),
    ("a.toml", 'ttl = "five"\n', r"a\.toml:1: ttl must be an integer \(as --ttl\), not a string \('five'\)"),
    ("a.yaml", "node-id: n1\nkeep-on-exit: 1\n", r"a\.yaml:2: keep-on-exit must be true or false"),
    ("a.yaml", "allow-bind: /srv\n", r"a\.yaml:1: allow-bind must be a list of strings"),
    ("a.yaml", "timeout: 3\n", r"a\.yaml:1: unknown key 'timeout'"),  # (not an agent setting)
    ("a.yaml", "config: other.yaml\n", r"a\.yaml:1: unknown key 'config'"),
    ("a.ini", "ttl = 5\n", r"must end in \.toml, \.yaml or \.yml"),
])
def test_bad_files_refused(tmp_path: Path, name: str, text: str, message: str) -> None:
    (tmp_path / name).write_text(text)
    for extra in ([], ["--print-config"]):
        r = CliRunner().invoke(app, ["agent", "--config", str(tmp_path / name), *extra], env=ENV_CLEAR)
        assert r.exit_code == 2, r.output
        assert re.search(message, r.stderr), r.stderr
        assert "Traceback" not in r.output


def test_missing_file_refused(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["agent", "--config", str(tmp_path / "none.toml")], env=ENV_CLEAR)
    assert r.exit_code == 2 and "cannot read it" in r.stderr


def test_file_values_are_checked_as_flags_are(tmp_path: Path) -> None:
    """A value of the right type but invalid is refused when the agent starts, naming the flag."""
    (tmp_path / "a.toml").write_text('node-id = "n1"\nadvertise-ip = "127.0.0.5"\ndns-workers = 99\n')
    r = CliRunner().invoke(app, ["agent", "--config", str(tmp_path / "a.toml")], env=ENV_CLEAR)
    assert r.exit_code == 2 and "--dns-workers" in r.stderr
