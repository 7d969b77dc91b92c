"""Whether a service's ``http_host`` is served over HTTPS: the spec's ``https`` and ``hsts``.  Pure.

* ``https``: ``off`` (the default: plain HTTP only; an HTTPS request for the host gets 421),
  ``on`` (HTTP and HTTPS), ``redirect`` (HTTP answers 308 to the same URL on https), ``only``
  (HTTPS only; an HTTP request gets 421).  An ACME HTTP-01 challenge is answered on HTTP in every
  mode, before any redirect.
* ``hsts``: ``Strict-Transport-Security: max-age=<seconds>`` on the host's HTTPS answers (0, the
  default: none); only with ``https`` other than ``off``.

Both are written into the stored spec only when not the default, so specs without them read the
same to older agents.  The routing table carries them to nginx as route options (``tls=...``,
``hsts=...``: an older balancer ignores options it does not know).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from daprdockr.errors import ValidationError

HttpsMode = Literal["off", "on", "redirect", "only"]
HTTPS_MODES: tuple[HttpsMode, ...] = ("off", "on", "redirect", "only")
MAX_HSTS = 2 * 365 * 86_400  # two years: more than any browser's preload list asks for


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpsPolicy:
    mode: HttpsMode = "off"
    hsts: int = 0  # max-age in seconds; 0: no header

    @classmethod
    def parse(cls, https: object, hsts: object) -> HttpsPolicy:
        """From the spec's ``https`` and ``hsts`` values (None: absent)."""
        mode = "off" if https is None else https
        if mode not in HTTPS_MODES:
            raise ValidationError(f"{https!r} is not one of {', '.join(HTTPS_MODES)}", field="https")
        age = 0 if hsts is None else hsts
        if isinstance(age, bool) or not isinstance(age, int) or not 0 <= age <= MAX_HSTS:
            raise ValidationError(f"{hsts!r} must be seconds, 0..{MAX_HSTS}", field="hsts")
        if age and mode == "off":
            raise ValidationError("needs https on, redirect or only", field="hsts")
        return cls(mode=mode, hsts=age)

    @property
    def serves_https(self) -> bool:
        return self.mode != "off"

    def to_dict(self) -> dict[str, Any]:
        """The spec fields that differ from the defaults (none for the default policy)."""
        out: dict[str, Any] = {}
        if self.mode != "off":
            out["https"] = self.mode
        if self.hsts:
            out["hsts"] = self.hsts
        return out

    def route_options(self) -> tuple[str, ...]:
        """The route options nginx's balancer reads (none for the default, so a route's line is
        what it was before the policy existed)."""
        out: list[str] = []
        if self.mode != "off":
            out.append(f"tls={self.mode}")
        if self.hsts:
            out.append(f"hsts={self.hsts}")
        return tuple(out)
