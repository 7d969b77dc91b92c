"""The agent's config file, pure parts: keys and their lines, types, precedence, the printed form."""

from __future__ import annotations

from pathlib import Path

import pytest

from daprdockr.core.agentfile import (
    Effective,
    FileValue,
    OptionDef,
    effective,
    file_format,
    parse_agent_file,
    render_effective,
)
from daprdockr.errors import ValidationError

OPTIONS = {o.name: o for o in (
    OptionDef(name="ttl", kind="int"), OptionDef(name="drain_deadline", kind="float"),
    OptionDef(name="keep_on_exit", kind="bool"), OptionDef(name="dns_listen", kind="str"),
    OptionDef(name="state_dir", kind="path"), OptionDef(name="allow_bind", kind="list"),
)}


@pytest.mark.parametrize(("name", "fmt"), [
    ("a.toml", "toml"), ("A.TOML", "toml"), ("a.yaml", "yaml"), ("a.yml", "yaml"),
])
def test_format_by_extension(name: str, fmt: str) -> None:
    assert file_format(Path(name)) == fmt


def test_other_extension_refused() -> None:
    with pytest.raises(ValidationError, match=r"\.toml, \.yaml or \.yml"):
        file_format(Path("agent.conf"))


@pytest.mark.parametrize(("fmt", "text", "expected"), [
    ("toml", 'ttl = 7\ndns-listen = "127.0.0.1:53"\nkeep_on_exit = true\n', {"ttl": 7, "dns_listen": "127.0.0.1:53",
                                                                            "keep_on_exit": True}),
    ("toml", "drain-deadline = 30\n", {"drain_deadline": 30.0}),  # an integer is a number
    ("toml", "dns-listen = 53\n", {"dns_listen": "53"}),  # a number for a text flag (compact-interval = 300)
    ("toml", 'state_dir = "/var/lib/x"\nallow-bind = ["/a", "/b"]\n', {"state_dir": Path("/var/lib/x"),
                                                                      "allow_bind": ["/a", "/b"]}),
    ("yaml", "ttl: 7\ndns-listen: 127.0.0.1:53\nkeep-on-exit: false\n", {"ttl": 7, "dns_listen": "127.0.0.1:53",
                                                                         "keep_on_exit": False}),
    ("yaml", "drain_deadline: 2.5\nallow_bind:\n  - /srv\n", {"drain_deadline": 2.5, "allow_bind": ["/srv"]}),
    ("yaml", "", {}),
    ("yaml", "# only a comment\n", {}),
    ("toml", "", {}),
])
def test_values(fmt: str, text: str, expected: dict[str, object]) -> None:
    got = parse_agent_file(text, source="f", fmt=fmt, options=OPTIONS)  # type: ignore[arg-type]
    assert {k: v.value for k, v in got.items()} == expected
    for key, value in expected.items():
        assert type(got[key].value) is type(value)


@pytest.mark.parametrize(("fmt", "text", "message"), [
    # unknown keys, with their line
    ("toml", "# comment\nttl = 3\n\nnode-idd = \"x\"\n", r"^f:4: unknown key 'node-idd'"),
    ("toml", "ttl = 3\n[extra]\na = 1\n", r"^f:2: unknown key 'extra'"),
    ("toml", "'quoted key' = 1\n", r"^f:1: unknown key 'quoted key'"),
    ("yaml", "ttl: 3\n\n\nbogus: 1\n", r"^f:4: unknown key 'bogus'"),
    ("yaml", "ttl: 3\nnested:\n  x: 1\n", r"^f:2: unknown key 'nested'"),
    # wrong types, with their line
    ("toml", 'dns_listen = "a:1"\nttl = "5"\n', r"^f:2: ttl must be an integer \(as --ttl\), not a string \('5'\)"),
    ("toml", "ttl = 5.5\n", r"^f:1: ttl must be an integer .*not a number \(5.5\)"),
    ("toml", "ttl = true\n", r"^f:1: ttl must be an integer .*not a boolean"),
    ("toml", 'keep-on-exit = "yes"\n', r"^f:1: keep-on-exit must be true or false \(as --keep-on-exit\)"),
    ("toml", 'allow_bind = "/srv"\n', r"^f:1: allow_bind must be a list of strings"),
    ("toml", "allow_bind = [1, 2]\n", r"^f:1: allow_bind must be a list of strings"),
    ("toml", "drain_deadline = false\n", r"^f:1: drain_deadline must be a number"),
    ("toml", "[ttl]\nx = 1\n", r"^f:1: ttl must be an integer .*not a table/mapping"),
    ("yaml", "ttl: '5'\n", r"^f:1: ttl must be an integer"),
    ("yaml", "ttl: 5\nkeep_on_exit: yes please\n", r"^f:2: keep_on_exit must be true or false"),
    ("yaml", "state_dir: 7\n", r"^f:1: state_dir must be a path \(string\)"),
    ("yaml", "dns_listen:\n", r"^f:1: dns_listen must be a string .*not null"),
    # one key twice (also as dashes and underscores)
    ("yaml", "ttl: 1\nttl: 2\n", r"^f:2: 'ttl' is given twice \(also at line 1\)"),
    ("yaml", "dns-listen: a\ndns_listen: b\n", r"^f:2: 'dns_listen' is given twice"),
    ("toml", 'dns-listen = "a"\ndns_listen = "b"\n', r"^f:2: 'dns_listen' is given twice"),
    # not a file of keys
    ("yaml", "- ttl\n", r"^f:1: the config file must be a mapping"),
    ("yaml", "ttl: [\n", r"^f:2: invalid YAML"),
    ("toml", "ttl = \n", r"^f: invalid TOML"),
    ("toml", "ttl = 1\nttl = 2\n", r"^f: invalid TOML"),
])
def test_refused(fmt: str, text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_agent_file(text, source="f", fmt=fmt, options=OPTIONS)  # type: ignore[arg-type]


def test_unknown_key_lists_the_known_ones() -> None:
    with pytest.raises(ValidationError) as info:
        parse_agent_file("bogus = 1\n", source="f", fmt="toml", options=OPTIONS)
    assert all(name in str(info.value) for name in OPTIONS)


@pytest.mark.parametrize(("source", "in_file", "expected"), [
    ("flag", True, ("F", "flag")),
    ("env", True, ("F", "env")),
    ("default", True, ("file-value", "file")),
    ("default", False, ("F", "default")),
    ("flag", False, ("F", "flag")),
])
def test_precedence(source: str, in_file: bool, expected: tuple[str, str]) -> None:
    file = {"dns_listen": FileValue(value="file-value", line=1)} if in_file else {}
    got = effective(given={"dns_listen": "F"}, given_from={"dns_listen": source}, file=file)  # type: ignore[dict-item]
    assert (got["dns_listen"].value, got["dns_listen"].source) == expected


def test_printed_configuration_reads_back() -> None:
    values = {
        "ttl": Effective(value=9, source="flag"), "drain_deadline": Effective(value=1.5, source="file"),
        "keep_on_exit": Effective(value=True, source="env"), "dns_listen": Effective(value='a"b\\c', source="default"),
        "state_dir": Effective(value=None, source="default"),
        "allow_bind": Effective(value=["/x", "/y"], source="file"),
    }
    text = render_effective(values)
    assert "ttl            = 9  # flag" in text and "# state_dir      (unset)  # default" in text
    back = parse_agent_file(text, source="printed", fmt="toml", options=OPTIONS)
    assert {k: v.value for k, v in back.items()} == {k: v.value for k, v in values.items() if v.value is not None}
