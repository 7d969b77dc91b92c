"""The nginx config is static (routes live in Lua's shared dict): golden file and validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daprdockr.core.nginx_render import NginxPaths, render_nginx_conf
from daprdockr.errors import ValidationError

GOLDEN = Path(__file__).parent / "golden"
PATHS = NginxPaths(root="/tmp/dd/n1/nginx", modules=("/usr/lib/nginx/modules/ndk_http_module.so",
                                                     "/usr/lib/nginx/modules/ngx_http_lua_module.so"),
                   lua="/opt/daprdockr/lua")


@pytest.mark.parametrize(("case", "listen", "user", "https"), [
    ("plain", ("127.0.0.1", 80), None, None),
    ("root", ("127.0.0.11", 8080), ("www-data", "www-data"), None),
    ("https", ("127.0.0.11", 80), None, ("127.0.0.11", 443)),
])
def test_golden(case: str, listen: tuple[str, int], user: tuple[str, str] | None,
                https: tuple[str, int] | None) -> None:
    text = render_nginx_conf(listen=listen, paths=PATHS, worker_user=user, https_listen=https)
    path = GOLDEN / f"nginx_{case}.conf"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_ipv6_listen_and_the_control_socket() -> None:
    text = render_nginx_conf(listen=("::1", 8080), paths=PATHS)
    assert "listen [::1]:8080 default_server;" in text
    assert "listen unix:/tmp/dd/n1/nginx/control.sock;" in text


@pytest.mark.parametrize("root", ["relative/path", "/tmp/a b", "/tmp/x;y", "/tmp/x\n"])
def test_unsafe_paths_refused(root: str) -> None:
    with pytest.raises(ValidationError):
        NginxPaths(root=root)
    with pytest.raises(ValidationError):
        NginxPaths(root="/ok", modules=(root,))


@pytest.mark.parametrize("user", [("root;", "x"), ("a b", "c"), ("www-data", "evil\n")])
def test_unsafe_user_refused(user: tuple[str, str]) -> None:
    with pytest.raises(ValidationError):
        render_nginx_conf(listen=("127.0.0.1", 80), paths=PATHS, worker_user=user)


def test_https_listen_must_differ_and_be_a_port() -> None:
    with pytest.raises(ValidationError) as err:
        render_nginx_conf(listen=("127.0.0.1", 80), paths=PATHS, https_listen=("127.0.0.1", 80))
    assert err.value.field == "https_listen"
    with pytest.raises(ValidationError):
        render_nginx_conf(listen=("127.0.0.1", 80), paths=PATHS, https_listen=("127.0.0.1", 0))
    text = render_nginx_conf(listen=("::1", 80), paths=PATHS, https_listen=("::1", 8443))
    assert "listen [::1]:8443 ssl http2 default_server;" in text and "https_port = 8443" in text
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text and "ssl_certificate /tmp/dd/n1/nginx/tls-default.pem;" in text
