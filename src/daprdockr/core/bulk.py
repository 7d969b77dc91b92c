"""Two helpers for decoding many stored values at once (a full read of 100 000 keys).

* :func:`loads` is :func:`json.loads` of a stored value, with the common case cheaper: a value that
  is UTF-8 text holding exactly one JSON value, nothing before or after it (what every writer
  stores), goes straight to the C scanner ``json.loads`` itself ends in, without its encoding
  detection and whitespace matching (BENCHMARKS.md, "Scale: the cost of one event at 1k, 10k and
  100k instances").  Anything else is handed to ``json.loads``, so every result and every error is
  exactly its own.
* :func:`gc_paused` pauses the cyclic garbage collector while a bulk decode builds its records,
  then moves what was built straight to the collector's oldest generation, where survivors of its
  collections end up anyway.  The records are kept, not garbage, but the collector would walk the
  growing heap again and again meanwhile (BENCHMARKS.md, "Scale").  Nothing is left out of later
  full collections: the move is not a freeze.
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Callable, Iterator

# the C scanner of a default decoder, as json.loads' own (typeshed leaves the attribute out)
_scan_once: Callable[[str, int], tuple[object, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def loads(value: bytes) -> object:
    """``json.loads(value)``: the same value, or the same exception."""
    try:
        text = value.decode()
        data, end = _scan_once(text, 0)
    except (UnicodeDecodeError, StopIteration, ValueError, RecursionError):
        return json.loads(value)
    if end != len(text):  # (whitespace or anything else after the value)
        return json.loads(value)
    return data


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off meanwhile (as it was before, after); what was built goes
    to its oldest generation unless someone else keeps objects frozen (they would thaw too)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if not gc.get_freeze_count():
            gc.freeze()  # every tracked object to the permanent generation ...
            gc.unfreeze()  # ... and from there to the oldest one: no walk over them
        if enabled:
            gc.enable()
