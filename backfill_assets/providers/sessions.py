"""HTTP sessions handed to the client libraries: every request goes through a Transport.

`rewrite_to` sends every request to another base URL (a proxy, a sandbox, or a test server) while
keeping path and query, and tells the server the original host in `X-Original-Host`.
"""

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

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        target, host = rewrite_url(url, self.rewrite_to)
        if host:
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "X-Original-Host": host}
        send = super().request  # type: ignore[misc]

        def once(timeout: float) -> Any:
            return send(method, target, *args, **{**kwargs, "timeout": kwargs.get("timeout") or timeout})

        return self.transport.send(once)


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
