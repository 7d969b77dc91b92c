"""The project's own error types.

Adapters translate library exceptions (aetcd/grpc, aiodocker, OS errors) into these at their
boundary, so the agent and the CLI only ever handle :class:`DaprDockrError`.  Every error says
whether it is *transient* (retry with backoff may succeed: a connection refused, a timeout) or
*terminal* (retrying the same thing cannot help: invalid input, an image that does not exist).
"""

from __future__ import annotations


class DaprDockrError(Exception):
    """Base class.  ``transient`` tells callers whether a retry with backoff makes sense."""

    transient: bool = False

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient

    @property
    def message(self) -> str:
        return str(self)


class ValidationError(DaprDockrError, ValueError):
    """User input (a name, a spec field, a file) is invalid.  Always terminal."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message, transient=False)
        self.field = field


class NotFoundError(DaprDockrError):
    """The thing asked for (a service, an instance) does not exist."""


class ConflictError(DaprDockrError):
    """The request contradicts the current state (an action already runs on that instance, the
    stored spec is invalid): terminal until that state changes."""


class StoreUnavailableError(DaprDockrError):
    """No etcd endpoint could be reached (after trying all of them)."""

    transient = True

    def __init__(self, message: str, *, endpoints: tuple[str, ...] = ()) -> None:
        tried = f" (tried {', '.join(endpoints)})" if endpoints else ""
        super().__init__(f"{message}{tried}", transient=True)
        self.endpoints = endpoints


class StoreRefusedError(StoreUnavailableError):
    """etcd is reachable but its TLS handshake refuses us (wrong CA, certificate or key).
    Terminal: retrying with the same settings cannot help.  (An error of unavailability for the
    CLI's exit code; see also :class:`StoreAccessError`.)"""

    transient = False

    def __init__(self, message: str, *, endpoints: tuple[str, ...] = ()) -> None:
        super().__init__(message, endpoints=endpoints)
        self.transient = False


class StoreError(DaprDockrError):
    """etcd answered with an error other than unavailability."""


class StoreFullError(StoreError):
    """etcd refuses writes: its database reached its quota (alarm NOSPACE; etcd's "mvcc: database
    space exceeded").  Terminal: every write fails until an operator compacts, defragments and
    disarms the alarm."""

    transient = False


class StoreAccessError(StoreError):
    """etcd refuses this client's user: the password is wrong, or its role does not allow the
    prefix.  Terminal: retrying with the same settings cannot help."""

    transient = False


class LeaseLostError(DaprDockrError):
    """Our etcd lease expired or was revoked: every key bound to it is gone."""

    transient = True


class RuntimeUnavailableError(DaprDockrError):
    """The Docker engine cannot be reached."""

    transient = True


class ContainerError(DaprDockrError):
    """The Docker engine refused an operation (pull, create, start).

    ``transient`` distinguishes e.g. a registry timeout from an image that does not exist.
    """


class AcmeError(DaprDockrError):
    """An ACME CA step failed (account, order, challenge, finalization).  Transient: the CA could
    not be reached, timed out, asked to slow down or failed inside; terminal: it refused the
    request (a challenge it could not validate, a name it will not issue for, a TLS certificate
    of the directory that the configured CA file does not trust)."""


class OcspError(DaprDockrError):
    """An OCSP responder could not be reached or gave no usable answer (stapling is best effort:
    the certificate is served without a staple)."""

    transient = True


class ProxyError(DaprDockrError):
    """nginx refused a configuration or could not be (re)started."""


class WaitTimeoutError(DaprDockrError):
    """``--wait`` gave up: the cluster did not reach the desired state in time."""


class RolloutFailedError(DaprDockrError):
    """``--wait``: the rollout of the spec that was written was rolled back or paused."""
