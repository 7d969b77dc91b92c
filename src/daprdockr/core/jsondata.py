"""JSON-shaped records as etcd stores them: canonical bytes (:func:`dumps`), the size bound, and
the checks every record's ``from_dict`` starts with (a JSON object, no unknown fields, bounded
counts), each failing with a :class:`~daprdockr.errors.ValidationError` naming the field."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sized
from typing import Any

from daprdockr.errors import ValidationError

MAX_RECORD_BYTES = 64 * 1024  # a whole stored spec or record, JSON-encoded


def require_mapping(data: object, *, what: str) -> Mapping[str, Any]:
    if type(data) is dict:  # (what JSON gives: no abstract-class check)
        return data
    if not isinstance(data, Mapping):
        raise ValidationError(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def reject_unknown(data: Mapping[str, Any], allowed: frozenset[str], *, what: str) -> None:
    if allowed.issuperset(data):
        return
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValidationError(
            f"unknown field(s) {', '.join(map(repr, unknown))} in {what}; "
            f"allowed: {', '.join(sorted(allowed))}",
            field=unknown[0],
        )


def check_count(items: Sized, limit: int, *, field: str) -> None:
    if len(items) > limit:
        raise ValidationError(f"{len(items)} entries, at most {limit} allowed", field=field)


def dumps(data: Mapping[str, Any]) -> bytes:
    """Canonical compact JSON bytes, as stored in etcd."""
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
