"""The agent's flags as config file keys, and the effective configuration of ``daprdockr agent``.

The keys are read off the command functions' signatures (each parameter's annotation gives its
kind, its ``typer.Option`` its environment variable): adding a flag to ``daprdockr agent`` makes
it a file key, with no list to keep in step.  Where each value came from is asked from the
command line parser (flag, environment, default); the file fills in what stayed a default
(:func:`daprdockr.core.agentfile.effective`).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from daprdockr.core.agentfile import FileValue, Kind, OptionDef, Source, file_format, parse_agent_file
from daprdockr.errors import ValidationError

_KINDS: dict[object, Kind] = {str: "str", int: "int", float: "float", bool: "bool", Path: "path"}
_SOURCES: dict[str, Source] = {"COMMANDLINE": "flag", "ENVIRONMENT": "env"}


def options_of(fn: Callable[..., object], *, skip: Collection[str] = ()) -> dict[str, OptionDef]:
    """Every option parameter of a typer command function as a file key (``typer.Context`` and
    ``skip`` left out)."""
    hints = typing.get_type_hints(fn, include_extras=True)
    out: dict[str, OptionDef] = {}
    for name in inspect.signature(fn).parameters:
        hint = hints[name]
        meta: tuple[Any, ...] = ()
        if typing.get_origin(hint) is typing.Annotated:
            hint, *rest = typing.get_args(hint)
            meta = tuple(rest)
        if name in skip or not meta:
            continue  # (the context, and what is not an option)
        out[name] = OptionDef(name=name, kind=_kind(hint, name=name),
                              envvar=next((m.envvar for m in meta if isinstance(getattr(m, "envvar", None), str)),
                                          None))
    return out


def _kind(hint: Any, *, name: str) -> Kind:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is list:
        return "list"
    try:
        return _KINDS[hint]
    except KeyError:
        raise TypeError(f"option {name}: no config file kind for {hint!r}") from None


def read_agent_file(path: Path, *, options: Mapping[str, OptionDef]) -> dict[str, FileValue]:
    """The file's keys and values, checked; ValidationError names the file and line."""
    fmt = file_format(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{path}: cannot read it ({exc})", field="--config") from None
    return parse_agent_file(text, source=str(path), fmt=fmt, options=options)


def source_of(ctx: Any, name: str) -> Source:
    """Where the parser took the value of option ``name`` of ``ctx``'s command."""
    found = ctx.get_parameter_source(name)
    return _SOURCES.get(getattr(found, "name", ""), "default")
