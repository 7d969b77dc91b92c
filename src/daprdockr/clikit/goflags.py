"""Go ``flag`` package command lines, as the original DaprDockr's commands took them.  Pure.

``-name value``, ``-name=value``, ``--name``; booleans only as ``-name`` or ``-name=true|false``;
parsing stops at the first non-flag argument or ``--``; ``-h``/``-help`` asks for the usage, which
:func:`usage` prints in the original's layout (``  -name=default: text``, sorted by name).  A
flag's default may come from an environment variable (as ``daprdockrd``'s ``ETCD_HOSTS``,
``HOST_IP`` and ``DOCKER_SOCK``).  Repeatable flags (``kind="list"``) collect every value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from daprdockr.errors import ValidationError

Kind = Literal["bool", "string", "int", "list"]
_TRUE = {"1", "t", "true", "T", "TRUE", "True"}
_FALSE = {"0", "f", "false", "F", "FALSE", "False"}


class HelpRequested(Exception):
    """``-h`` or ``-help`` was given."""


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    kind: Kind
    usage: str
    default: str | bool | int = ""
    env: str = ""  # an environment variable that, when set, replaces the default


@dataclass(frozen=True, slots=True)
class Parsed:
    values: Mapping[str, str | bool | int | list[str]]
    given: frozenset[str]  # flags on the command line (Go's flag.Visit)
    args: tuple[str, ...]  # what follows the flags

    def text(self, name: str) -> str:
        value = self.values[name]
        assert isinstance(value, str)
        return value

    def on(self, name: str) -> bool:
        return bool(self.values[name])

    def number(self, name: str) -> int:
        value = self.values[name]
        assert isinstance(value, int) and not isinstance(value, bool)
        return value

    def items(self, name: str) -> list[str]:
        value = self.values[name]
        assert isinstance(value, list)
        return value


def _defaults(flags: Sequence[Flag], environ: Mapping[str, str]) -> dict[str, str | bool | int | list[str]]:
    out: dict[str, str | bool | int | list[str]] = {}
    for f in flags:
        default: str | bool | int | list[str] = [] if f.kind == "list" else f.default
        if f.env and environ.get(f.env):
            default = _convert(f, environ[f.env], source=f"${f.env}")
        out[f.name] = default
    return out


def _convert(f: Flag, text: str, *, source: str) -> str | bool | int | list[str]:
    if f.kind == "bool":
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValidationError(f"invalid boolean value {text!r} for {source}")
    if f.kind == "int":
        try:
            return int(text, 0)
        except ValueError:
            raise ValidationError(f"invalid value {text!r} for {source}: not an integer") from None
    if f.kind == "list":
        return [text]
    return text


def parse(argv: Sequence[str], flags: Sequence[Flag], *, environ: Mapping[str, str]) -> Parsed:
    by_name = {f.name: f for f in flags}
    values = _defaults(flags, environ)
    given: set[str] = set()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        body = arg[2:] if arg.startswith("--") else arg[1:]
        name, sep, text = body.partition("=")
        if not name or name.startswith("-") or name.startswith("="):
            raise ValidationError(f"bad flag syntax: {arg}")
        if name in ("h", "help") and name not in by_name:
            raise HelpRequested
        f = by_name.get(name)
        if f is None:
            raise ValidationError(f"flag provided but not defined: -{name}")
        if not sep:
            if f.kind == "bool":
                text = "true"
            else:
                i += 1
                if i >= len(args):
                    raise ValidationError(f"flag needs an argument: -{name}")
                text = args[i]
        value = _convert(f, text, source=f"-{name}")
        if f.kind == "list":
            current = values[name] if name in given else []
            assert isinstance(current, list) and isinstance(value, list)
            value = current + value
        values[name] = value
        given.add(name)
        i += 1
    return Parsed(values=values, given=frozenset(given), args=tuple(args[i:]))


def usage(prog: str, flags: Sequence[Flag], *, environ: Mapping[str, str] | None = None) -> str:
    """``Usage of <prog>:`` and one ``  -name=default: text`` line per flag, sorted by name; a flag
    whose environment variable is set in ``environ`` shows that value as its default."""
    lines = [f"Usage of {prog}:"]
    for f in sorted(flags, key=lambda f: f.name):
        value = (environ or {}).get(f.env) if f.env else None
        if f.kind == "bool":
            default = "true" if f.default else "false"
        elif f.kind == "int":
            default = str(f.default or 0)
        elif f.kind == "list":
            default = "[]"
        else:
            default = f'"{value or f.default}"'
        env = f" (env {f.env})" if f.env else ""
        lines.append(f"  -{f.name}={default}: {f.usage}{env}")
    return "\n".join(lines) + "\n"
