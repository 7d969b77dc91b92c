"""The DNS server's clients: inside ``allow`` or outside it with their rate-limit key, remembered.

Recursion is only for clients in ``allow`` (by default loopback; the agent passes this host's own
addresses and its containers' network too): others get REFUSED for names outside the zone, while
zone answers stay open to all.  UDP clients outside ``allow`` are also rate limited
(:class:`daprdockr.core.dns.guard.ResponseRateLimiter`: a token bucket per /24 or /56, ``rrl``; a
limited response is dropped, or every ``slip``-th one sent as TC=1 with only the question, so a
real client whose network is being spoofed can still get through over TCP).  Client addresses are
remembered as inside (a set) or outside with their bucket key (a dict), each of at most
:data:`MAX_CLIENTS` entries (cleared when full), so an allowed client costs one set lookup per
datagram and is never limited.
"""

from __future__ import annotations

from collections.abc import Sequence

from daprdockr.core.dns.guard import Network, ResponseRateLimiter, RrlPolicy, client_key

MAX_CLIENTS = 4096  # client verdicts kept (inside ``allow``, or the rate-limit key)


class Clients:
    """Who is asking: :meth:`key` per address, and the rate limiter of those outside ``allow``."""

    def __init__(self, *, allow: Sequence[Network], rrl: RrlPolicy | None) -> None:
        self.allow = allow
        self.limiter = ResponseRateLimiter(rrl) if rrl is not None else None
        self.inside: set[str] = set()  # client addresses known to be inside ``allow``
        self.outside: dict[str, str] = {}  # other client addresses -> their rate-limit key

    def key(self, host: str) -> str:
        """``""`` if ``host`` is inside ``allow``, else its rate-limit key; cached per address."""
        if host in self.inside:
            return ""
        key = self.outside.get(host)
        if key is None:
            key = client_key(host, allow=self.allow)
            known: set[str] | dict[str, str] = self.outside if key else self.inside
            if len(known) >= MAX_CLIENTS:
                known.clear()  # in place: the UDP protocol holds the set
            if key:
                self.outside[host] = key
            else:
                self.inside.add(host)
        return key
