"""Proxies from the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``), as curl reads them.

An ``https://`` proxy is used, not dropped (aiohttp's own reading drops it with a log warning):
the transport (``wire.py``) speaks TLS to the proxy, then TLS inside the tunnel to the site.
:func:`proxy_problem` refuses, before any call, a proxy this process cannot use (SOCKS).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.request import getproxies, proxy_bypass

import aiohttp
from aiohttp.helpers import basicauth_from_netrc, netrc_from_env, strip_auth_from_url
from yarl import URL

Proxy = tuple[URL | None, aiohttp.BasicAuth | None]
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
    credentials: from the proxy URL, else from ``~/.netrc`` for the proxy's host."""
    if url.host is not None and proxy_bypass(url.host):
        return None, None
    raw = getproxies().get(url.scheme)
    if not raw:
        return None, None
    proxy, auth = strip_auth_from_url(URL(raw))
    if auth is None and proxy.host is not None:
        netrc = netrc_from_env()
        if netrc is not None:
            try:
                auth = basicauth_from_netrc(netrc, proxy.host)
            except LookupError:
                auth = None
    return proxy, auth
