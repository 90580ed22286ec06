"""Proxies from the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``), as curl reads them.

aiohttp's own reading (``trust_env``) drops an ``https://`` proxy URL with only a log warning, so
requests would go direct. aiohttp supports an HTTPS proxy when it is passed explicitly (TLS in
TLS needs Python 3.11's asyncio and aiohttp 3.8 or later): :func:`env_proxy` passes it, and
:func:`proxy_problem` refuses, before any call, a proxy this process cannot use.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from importlib.metadata import version
from urllib.request import getproxies, proxy_bypass

import aiohttp
from aiohttp.helpers import basicauth_from_netrc, netrc_from_env, strip_auth_from_url
from yarl import URL

Proxy = tuple[URL | None, aiohttp.BasicAuth | None]
PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY")


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def https_proxy_supported() -> bool:
    """aiohttp can reach an HTTPS site through an HTTPS proxy here (TLS in TLS)."""
    return sys.version_info >= (3, 11) and _version(version("aiohttp")) >= (3, 8)


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
        if scheme == "https" and not https_proxy_supported():
            return (
                f"{name}: an https:// proxy needs Python 3.11 or later and aiohttp 3.8 or "
                f"later (this is Python {sys.version_info.major}.{sys.version_info.minor}, "
                f"aiohttp {version('aiohttp')}): use the proxy's http:// address or upgrade"
            )
    return None


def env_proxy(url: URL) -> Proxy:
    """The proxy that HTTPS_PROXY / HTTP_PROXY / NO_PROXY choose for ``url``: aiohttp's rule,
    except that an ``https://`` proxy is used, not dropped."""
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
