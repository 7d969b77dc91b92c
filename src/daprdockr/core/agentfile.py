"""The agent's configuration file (``daprdockr agent --config FILE``): parsing and checking.

A file is TOML (``.toml``) or YAML (``.yaml``/``.yml``): one flat mapping whose keys are the
agent's long flag names, with dashes or underscores (``dns-listen`` = ``dns_listen``).  The keys
and their types come from the caller (derived from the flags themselves, see
:mod:`daprdockr.clikit.agentfile`), never from a list kept here.  An unknown key, a key given
twice or a value of the wrong type is refused with the file's name and the key's line.
Pure: it is handed the text.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from daprdockr.errors import ValidationError

Kind = Literal["str", "int", "float", "bool", "path", "list"]
Format = Literal["toml", "yaml"]

_KIND_TEXT: dict[Kind, str] = {
    "str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
    "path": "a path (string)", "list": "a list of strings",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionDef:
    """One flag as a file key: ``name`` with underscores, its value's kind, its env variable."""

    name: str
    kind: Kind
    envvar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True, slots=True, kw_only=True)
class FileValue:
    value: object  # converted to the flag's Python type (Path for a path, list[str] for a list)
    line: int


def key_name(key: str) -> str:
    """``dns-listen`` and ``dns_listen`` are the same key."""
    return key.replace("-", "_")


def file_format(path: Path) -> Format:
    suffix = path.suffix.lower()
    if suffix == ".toml":
        return "toml"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    raise ValidationError(f"{path}: the config file must end in .toml, .yaml or .yml", field="--config")


def parse_agent_file(
    text: str, *, source: str, fmt: Format, options: Mapping[str, OptionDef],
) -> dict[str, FileValue]:
    """Key (underscored) -> value and line; ValidationError ``source:line: ...`` on any bad key or value."""
    entries = _toml_entries(text, source=source) if fmt == "toml" else _yaml_entries(text, source=source)
    result: dict[str, FileValue] = {}
    for raw, value, line in entries:
        name = key_name(str(raw))
        where = f"{source}:{line}"
        option = options.get(name)
        if option is None:
            raise ValidationError(f"{where}: unknown key {raw!r} (the keys are the agent's flags: "
                                  f"{', '.join(sorted(options))})")
        if name in result:
            raise ValidationError(f"{where}: {raw!r} is given twice (also at line {result[name].line})")
        result[name] = FileValue(value=_convert(value, option, where=where, raw=str(raw)), line=line)
    return result


def _convert(value: object, option: OptionDef, *, where: str, raw: str) -> object:
    kind = option.kind
    ok = (
        isinstance(value, bool) if kind == "bool"
        else isinstance(value, int) and not isinstance(value, bool) if kind == "int"
        else isinstance(value, int | float) and not isinstance(value, bool) if kind == "float"
        else isinstance(value, list) and all(isinstance(v, str) for v in value) if kind == "list"
        else isinstance(value, str)
    )
    if not ok and kind == "str" and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # (a number for a text flag, e.g. compact-interval = 300: the flag's parse checks it)
    if not ok:
        raise ValidationError(f"{where}: {raw} must be {_KIND_TEXT[kind]} (as {option.flag}), "
                              f"not {_describe(value)}")
    if kind == "float":
        return float(value)  # type: ignore[arg-type]  # (checked above: int or float)
    if kind == "path":
        return Path(str(value))
    if kind == "list":
        return list(value)  # type: ignore[call-overload]  # (checked above: a list of str)
    return value


def _describe(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a table/mapping", type(None): "null"}
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"


# ------------------------------------------------------------------------------- TOML

def _toml_entries(text: str, *, source: str) -> list[tuple[str, object, int]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError(f"{source}: invalid TOML: {exc}") from None
    return [(key, value, _toml_line(text, key)) for key, value in data.items()]


def _toml_line(text: str, key: str) -> int:
    """The line of top-level ``key``: ``key = ...`` before the first table header, or ``[key]``
    (tomllib keeps no positions, so the text is scanned; 0 when not found, e.g. a dotted key)."""
    quoted = rf"""(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')"""
    assignment = re.compile(rf"^\s*{quoted}\s*=")
    header = re.compile(rf"^\s*\[\[?\s*{quoted}\s*\]")
    in_tables = False
    for number, line in enumerate(text.splitlines(), start=1):
        if not in_tables and assignment.match(line):
            return number
        if line.lstrip().startswith("["):
            in_tables = True
            if header.match(line):
                return number
    return 0


# ------------------------------------------------------------------------------- YAML

def _yaml_entries(text: str, *, source: str) -> list[tuple[str, object, int]]:
    import yaml  # (here: a TOML file, and every other command, start without it)

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValidationError(f"{source}{where}: invalid YAML: {problem}") from None
    if node is None:
        return []
    if not isinstance(node, yaml.MappingNode):
        raise ValidationError(f"{source}:{node.start_mark.line + 1}: the config file must be a mapping of keys")
    entries: list[tuple[str, object, int]] = []
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        try:
            key = _yaml_value(key_node)
            value = _yaml_value(value_node)
        except yaml.YAMLError as exc:
            raise ValidationError(f"{source}:{line}: invalid YAML: {exc}") from None
        if not isinstance(key, str):
            raise ValidationError(f"{source}:{line}: key {key!r} is not a name")
        entries.append((key, value, line))
    return entries


def _yaml_value(node: Any) -> object:
    import yaml

    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


# ------------------------------------------------------------------------------- precedence

Source = Literal["flag", "env", "file", "default"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Effective:
    value: object
    source: Source


def effective(
    *, given: Mapping[str, object], given_from: Mapping[str, Source], file: Mapping[str, FileValue],
) -> dict[str, Effective]:
    """flag > environment > file > default, per key.  ``given`` is what the command line parser
    produced for every key and ``given_from`` where it took it (``flag``, ``env`` or ``default``)."""
    out: dict[str, Effective] = {}
    for name, value in given.items():
        source = given_from.get(name, "default")
        if source == "default" and name in file:
            out[name] = Effective(value=file[name].value, source="file")
        else:
            out[name] = Effective(value=value, source=source)
    return out


def render_effective(values: Mapping[str, Effective]) -> str:
    """The effective configuration as a TOML file (usable as ``--config``), each value's source in
    a comment; an unset value is a commented line."""
    width = max((len(name) for name in values), default=0)
    lines = []
    for name, item in values.items():
        if item.value is None:
            lines.append(f"# {name.ljust(width)} (unset)  # {item.source}")
        else:
            lines.append(f"{name.ljust(width)} = {_toml_value(item.value)}  # {item.source}")
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'
