"""Proxies from the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``), as curl reads them.

An ``https://`` proxy is used, not dropped (aiohttp's own reading drops it with a log warning):
the transport (``wire.py``) speaks TLS to the proxy, then TLS inside the tunnel to the site.
:func:`proxy_problem` refuses, before any call, a proxy this process cannot use (SOCKS).
"""

from __future__ import annotations

import base64
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.request import getproxies, proxy_bypass

from yarl import URL

# The proxy, and the value of its Proxy-Authorization header ("Basic ..."), if it has one.
Proxy = tuple[URL | None, str | None]
PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY")


def proxy_problem(environ: Mapping[str, str]) -> str | None:
    """Why a proxy variable of ``environ`` cannot be used (its value is never shown: it may
    hold a password), or None."""
    for name in PROXY_VARIABLES:
        value = environ.get(name, "").strip()
        if not value:
            continue
        scheme = URL(value).scheme.lower() if "://" in value else ""
        if scheme not in ("http", "https"):
            return (
                f"{name}: a proxy URL must start with http:// or https:// (this one "
                f"{'starts with ' + scheme + '://' if scheme else 'has no scheme'}); "
                f"SOCKS proxies are not supported: unset {name} or name an HTTP(S) proxy"
            )
    return None


def env_proxy(url: URL) -> Proxy:
    """The proxy that HTTPS_PROXY / HTTP_PROXY / NO_PROXY choose for ``url`` (curl's and
    aiohttp's rule, except that an ``https://`` proxy is used, not dropped), and its
    credentials: from the proxy URL, else from the netrc file (``$NETRC``, else ``~/.netrc``)
    for the proxy's host."""
    if url.host is not None and proxy_bypass(url.host):
        return None, None
    raw = getproxies().get(url.scheme)
    if not raw:
        return None, None
    proxy = URL(raw)
    if proxy.raw_user is not None or proxy.raw_password is not None:
        return proxy.with_user(None), basic(proxy.user or "", proxy.password or "")
    if proxy.host is None:
        return proxy, None
    found = _netrc_login(proxy.host)
    return proxy, None if found is None else basic(*found)


def basic(user: str, password: str) -> str:
    """A ``Basic`` credentials value (RFC 7617; latin-1, as aiohttp and curl encode it)."""
    token = base64.b64encode(f"{user}:{password}".encode("latin-1", "replace")).decode("ascii")
    return f"Basic {token}"


def _netrc_login(host: str) -> tuple[str, str] | None:
    """The netrc file's login and password for ``host`` (or its ``default``), if any. A
    missing or unreadable file is no credentials, as with curl."""
    where = os.environ.get("NETRC")
    try:
        path = Path(where) if where else Path.home() / ".netrc"
        found = netrc.netrc(str(path)).authenticators(host)
    except (OSError, RuntimeError, netrc.NetrcParseError):
        return None
    if found is None:
        return None
    login, account, password = found
    return (login or account or ""), (password or "")
