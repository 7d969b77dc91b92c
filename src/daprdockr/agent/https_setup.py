"""How an agent serves HTTPS, decided at its start: the listener (``--https-listen auto``: port
443 of the advertise address when etcd holds a certificate then), whether stored private keys may
go to nginx, and the parts that feed nginx (the TLS watch, and the OCSP stapler with HTTPS)."""

from __future__ import annotations

import logging

from daprdockr.adapters.etcd_store import EtcdStore
from daprdockr.adapters.tls_store import TlsStore
from daprdockr.agent.config import AgentConfig
from daprdockr.agent.ocsp_stapler import OcspStapler
from daprdockr.agent.tls_watch import INSECURE_WARNING, TlsWatch
from daprdockr.core.tls_serving import keys_protected
from daprdockr.errors import DaprDockrError
from daprdockr.proxy import NginxManager

log = logging.getLogger(__name__)


async def https_listen_auto(*, store: EtcdStore, advertise_ip: str) -> tuple[str, int] | None:
    """``--https-listen auto``: port 443 of ``advertise_ip`` when etcd holds a certificate now,
    else none (nginx's listeners are fixed at its start: it is never reloaded)."""
    try:
        tls, _ = await TlsStore(store=store).read_certs()
    except DaprDockrError as exc:
        log.warning("--https-listen auto: certificates not read (%s): HTTPS off until a restart", exc)
        return None
    if tls.certs:
        return advertise_ip, 443
    log.info("--https-listen auto: no certificate in etcd, HTTPS off (a certificate stored later "
             "needs a restart of this agent, or --https-listen ADDR:PORT)")
    return None


def serve_keys(cfg: AgentConfig, *, https_listen: tuple[str, int] | None) -> bool:
    """Whether stored private keys go to nginx: only with HTTPS on, and from a protected etcd
    unless --allow-insecure-keys (else one warning naming the risk)."""
    if https_listen is None:
        return False
    if keys_protected(cfg.etcd, cfg.etcd_security) or cfg.allow_insecure_keys:
        return True
    log.warning(INSECURE_WARNING)
    return False


def tls_parts(
    cfg: AgentConfig, *, store: EtcdStore, nginx: NginxManager, https_listen: tuple[str, int] | None
) -> tuple[TlsWatch, OcspStapler | None]:
    """The TLS watch (certificates and ACME answers from etcd to nginx) and, with HTTPS, the OCSP stapler."""
    ocsp = OcspStapler(nginx=nginx) if https_listen is not None else None
    watch = TlsWatch(store=TlsStore(store=store), nginx=nginx, serve_keys=serve_keys(cfg, https_listen=https_listen),
                     https=https_listen is not None, on_certs=ocsp.want if ocsp is not None else None)
    return watch, ocsp
