"""Admin authentication: a bearer token, or Basic with the token as password, or loopback."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REALM = 'Basic realm="nudgespot-segment admin", charset="UTF-8"'


def presented_secret(authorization: str) -> str | None:
    """Return the secret in a Bearer or Basic (password part) Authorization header."""
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip() or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep else None
    return None


def is_loopback(remote: str | None) -> bool:
    """Return whether the peer address is a loopback address."""
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


def admin_only(token: str) -> Callable[[Handler], Handler]:
    """Wrap a handler so that only an admin reaches it (see the contract's admin auth)."""

    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            refusal = _refusal(request, token)
            return refusal if refusal is not None else await handler(request)

        return guarded

    return wrap


def _refusal(request: web.Request, token: str) -> web.Response | None:
    if not token:
        if is_loopback(request.remote):
            return None
        return web.json_response(
            {"error": "admin endpoints answer only loopback clients while admin.token is empty"},
            status=403,
        )
    secret = presented_secret(request.headers.get("Authorization", ""))
    # Header text may carry undecodable bytes (as surrogates): compare the bytes as sent.
    given = secret.encode("utf-8", "surrogateescape") if secret is not None else None
    if given is not None and hmac.compare_digest(given, token.encode()):
        return None
    return web.json_response(
        {"error": "admin credentials required (Bearer token, or Basic with it as password)"},
        status=401,
        headers={"WWW-Authenticate": REALM},
    )
