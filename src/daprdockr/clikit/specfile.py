"""Building service specs from command-line flags and from YAML/JSON files.

Pure apart from reading the given text: :func:`parse_spec_text` turns a document (JSON or YAML,
auto-detected; ours or the original DaprDockr's service JSON) into one or more spec dicts with
errors that name the file and line;
:func:`merge_flags` overlays ``svc set`` flags on an existing spec so that
``svc set web.myapp --instances 5`` scales without repeating the image; :func:`merge_onto` is that
merge as the change function of a read-modify-write transaction.  :func:`load_spec_docs` reads
files, directories (their ``*.yaml``, ``*.yml`` and ``*.json``, sorted) and stdin into numbered
documents, and :func:`validate_docs` makes them specs, every error naming the file, the document
and the field.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from daprdockr.clikit.lifecycleflags import merge_lifecycle
from daprdockr.core.model import ServiceSpec
from daprdockr.core.names import ServiceName
from daprdockr.core.seedformat import from_seed, is_seed_doc
from daprdockr.errors import ValidationError


def parse_spec_text(text: str, *, source: str, ignored: list[str] | None = None) -> list[dict[str, Any]]:
    """One spec dict, or several for a JSON list / multi-document YAML.  A document in the original
    DaprDockr's shape (:mod:`daprdockr.core.seedformat`) is converted; the original fields it
    ignores are appended to ``ignored``."""
    stripped = text.lstrip()
    if not stripped:
        raise ValidationError(f"{source}: empty spec")
    if stripped[0] in "{[":
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
        docs = data if isinstance(data, list) else [data]
    else:
        import yaml  # (here: only a YAML spec needs it, every other command starts without it)

        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValidationError(f"{source}: invalid YAML{where}: {problem}") from exc
    if not docs:
        raise ValidationError(f"{source}: no spec in the document")
    out = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, Mapping):
            raise ValidationError(f"{source}: document {i + 1} must be a mapping of spec fields")
        if is_seed_doc(doc):
            try:
                converted, skipped = from_seed(doc)
            except ValidationError as exc:
                raise ValidationError(f"{source}: {exc}") from None
            out.append(converted)
            if ignored is not None:
                ignored.extend(skipped)
        else:
            out.append(dict(doc))
    return out


def parse_pairs(items: Sequence[str], *, field: str) -> dict[str, str]:
    """``["K=V", ...]`` -> dict; a missing ``=`` is an error naming the flag."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValidationError(f"{item!r} must be KEY=VALUE", field=field)
        result[key] = value
    return result


def merge_flags(base: Mapping[str, Any] | None, flags: Mapping[str, Any]) -> dict[str, Any]:
    """Overlay the flags that were given (not None) on ``base``; env, labels, proxy, health and
    update merge by key (:func:`~daprdockr.clikit.lifecycleflags.merge_lifecycle`)."""
    merged: dict[str, Any] = dict(base or {})
    for key, value in flags.items():
        if value is None:
            continue
        if key in ("env", "labels") and isinstance(value, Mapping):
            merged[key] = {**(merged.get(key) or {}), **value}
        elif key in ("health", "update"):
            merged[key] = merge_lifecycle(key, merged.get(key), value)
        elif key == "proxy" and isinstance(value, Mapping):
            merged[key] = {**(merged.get(key) or {}), **value}
        else:
            merged[key] = value
    return merged


def merge_onto(
    name: ServiceName, current: ServiceSpec | None, problem: str | None, flags: dict[str, Any]
) -> ServiceSpec:
    """The spec ``svc set`` writes: the flags given, merged onto the stored spec."""
    try:
        return ServiceSpec.from_dict(merge_flags(current.to_dict() if current else {}, flags), name=name)
    except ValidationError as exc:
        if problem is None:
            raise
        raise ValidationError(f"{exc} (the stored spec of {name} is invalid: {problem}; "
                              "give a whole spec with -f to replace it)") from None


SPEC_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class SpecDoc:
    """Document ``number`` (1-based, among the file's specs) of ``source``."""

    source: str
    number: int
    data: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.source}: document {self.number}"


def spec_files(path: Path) -> list[Path]:
    """``path`` itself, or a directory's spec files (``*.yaml``, ``*.yml``, ``*.json``) sorted by name."""
    if not path.is_dir():
        return [path]
    found = sorted(p for p in path.iterdir() if p.suffix in SPEC_SUFFIXES and p.is_file())
    if not found:
        raise ValidationError(f"{path}: no {', '.join('*' + s for s in SPEC_SUFFIXES)} file in the directory")
    return found


def load_spec_docs(paths: Sequence[str], *, stdin: TextIO | None = None) -> list[SpecDoc]:
    """Every document of every file (``-``: stdin; a directory: :func:`spec_files`), in order.
    Fields of the original DaprDockr format that are not managed are noted on stderr."""
    docs: list[SpecDoc] = []
    ignored: list[str] = []
    for path in paths:
        if path == "-":
            texts = [("<stdin>", (stdin or sys.stdin).read())]
        else:
            texts = []
            for file in spec_files(Path(path)):
                try:
                    texts.append((str(file), file.read_text()))
                except (OSError, UnicodeDecodeError) as exc:
                    raise ValidationError(f"{file}: {getattr(exc, 'strerror', None) or exc}") from exc
        for source, text in texts:
            parsed = parse_spec_text(text, source=source, ignored=ignored)
            docs += [SpecDoc(source=source, number=i, data=d) for i, d in enumerate(parsed, start=1)]
    if ignored:
        print(f"daprdockr: ignoring fields of the original format DaprDockr does not manage: {', '.join(ignored)}",
              file=sys.stderr)
    return docs


def validate_docs(docs: Sequence[SpecDoc]) -> list[ServiceSpec]:
    """Each document as a whole spec (its ``name`` required); the first invalid one raises a
    ValidationError naming its file, document and field; so does a name given twice."""
    specs: list[ServiceSpec] = []
    seen: dict[ServiceName, SpecDoc] = {}
    for doc in docs:
        try:
            spec = ServiceSpec.from_dict(doc.data)
        except ValidationError as exc:
            name = doc.data.get("name")
            about = f" ({name})" if isinstance(name, str) and len(name) <= 130 else ""
            raise ValidationError(f"{doc.where}{about}: {exc}", field=None) from None
        if (first := seen.get(spec.name)) is not None:
            raise ValidationError(f"{doc.where}: name: {spec.name} is also named in {first.where}")
        seen[spec.name] = doc
        specs.append(spec)
    return specs


def dump_specs(specs: Sequence[ServiceSpec], *, fmt: str) -> str:
    """``specs`` as ``apply -f`` reads them: multi-document YAML (``yaml``) or a JSON list (``json``)."""
    docs = [spec.to_dict() for spec in specs]
    if fmt == "json":
        return json.dumps(docs, indent=2, sort_keys=True) + "\n"
    if fmt != "yaml":
        raise ValidationError(f"{fmt!r} is not yaml or json", field="--format")
    import yaml

    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, allow_unicode=True)
