"""HTTP sessions handed to the client libraries: every request goes through a Transport.

`rewrite_to` sends every request to another base URL (a proxy, a sandbox, or a test server) while
keeping path and query, and tells the server the original host in `X-Original-Host`. Cookies the
rewritten host sets are mirrored onto the original domain, where the client library looks for them
(yfinance keeps Yahoo's consent cookie on ".yahoo.com"; without it, it re-fetches one per request).
"""

import copy
import http.cookiejar
import urllib.parse
from typing import Any

import curl_cffi.requests
import requests

from backfill_assets.providers.transport import Transport


def rewrite_url(url: str, base: str | None) -> tuple[str, str | None]:
    """`url` moved onto `base` (scheme, host, port), and the host it had; unchanged without a base."""
    if not base:
        return url, None
    original, target = urllib.parse.urlsplit(url), urllib.parse.urlsplit(base)
    moved = original._replace(scheme=target.scheme, netloc=target.netloc)
    return urllib.parse.urlunsplit(moved), original.netloc


class _Budgeted:
    """Mixin over a Session class: `request` goes through the transport (budget, retries, breaker)."""

    transport: Transport
    rewrite_to: str | None
    cookies: Any  # the Session's

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        target, host = rewrite_url(url, self.rewrite_to)
        if host:
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "X-Original-Host": host}
        send = super().request  # type: ignore[misc]

        def once(timeout: float) -> Any:
            return send(method, target, *args, **{**kwargs, "timeout": kwargs.get("timeout") or timeout})

        response = self.transport.send(once)
        if host:
            self._mirror_cookies(urllib.parse.urlsplit(target).hostname or "", host)
        return response

    def _mirror_cookies(self, rewritten: str, original: str) -> None:
        jar: http.cookiejar.CookieJar = getattr(self.cookies, "jar", self.cookies)  # curl_cffi wraps one
        domain = "." + ".".join(original.split(".")[-2:])
        for cookie in list(jar):
            if cookie.domain == rewritten:
                mirror = copy.copy(cookie)
                mirror.domain, mirror.domain_specified, mirror.domain_initial_dot = domain, True, True
                jar.set_cookie(mirror)


class BudgetedSession(_Budgeted, requests.Session):  # type: ignore[misc]
    """requests.Session under our HTTP policy (alpaca-py uses requests)."""

    def __init__(self, transport: Transport, rewrite_to: str | None = None) -> None:
        super().__init__()
        self.transport, self.rewrite_to = transport, rewrite_to


class BudgetedCurlSession(_Budgeted, curl_cffi.requests.Session):  # type: ignore[misc]
    """curl_cffi Session impersonating Chrome, as yfinance uses by default, under our HTTP policy."""

    def __init__(self, transport: Transport, rewrite_to: str | None = None) -> None:
        super().__init__(impersonate="chrome")
        self.transport, self.rewrite_to = transport, rewrite_to
