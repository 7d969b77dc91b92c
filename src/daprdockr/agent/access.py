"""Who may call the API: the ``Authorization: Bearer <token>`` check (constant time)."""

from __future__ import annotations

import hmac

from aiohttp import web


def bearer_ok(request: web.Request, token: str) -> bool:
    """The request carries ``Bearer <token>``; never true for an empty ``token``."""
    given = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
