"""API-key authentication of the server (``vecflow serve --api-key`` / ``VECFLOW_API_KEY``, or ``--no-auth``).

With a key, every endpoint but ``GET /health`` needs ``Authorization: Bearer <key>`` (FastAPI's ``HTTPBearer``:
the OpenAPI schema lists the scheme); a missing or wrong key gets 401 with ``WWW-Authenticate: Bearer``, the
key compared in constant time (``hmac.compare_digest``). Without a key the server binds only to loopback: any
other address refuses to start unless ``--no-auth`` accepts the risk explicitly (``check_bind``).
"""

from __future__ import annotations

import hmac
import ipaddress
import socket

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vecflow.core.errors import VecflowError

API_KEY_ENV = "VECFLOW_API_KEY"
SCHEME = HTTPBearer(auto_error=False, scheme_name="apiKey",
                    description=f"the server's API key (vecflow serve --api-key, or ${API_KEY_ENV})")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` can only be reached from this machine: a loopback IP, or a name whose every
    address is one (``localhost``). ``0.0.0.0``, ``::`` and names that do not resolve are not."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses)


def resolve_api_key(flag: str | None, environ: dict) -> str | None:
    """The key from ``--api-key``, else from ``$VECFLOW_API_KEY`` (an empty one is no key); a blank flag is an error."""
    if flag is not None:
        if not flag.strip():
            raise VecflowError("--api-key: empty; give a secret of at least 16 characters, e.g. "
                               "$(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return flag
    return environ.get(API_KEY_ENV) or None


def check_bind(host: str, api_key: str | None, no_auth: bool) -> None:
    """Refuse (one line, what to do) to serve a non-loopback address without a key unless ``--no-auth``."""
    if api_key and no_auth:
        raise VecflowError("--no-auth and an API key (--api-key or $VECFLOW_API_KEY) contradict each other; "
                           "give one of them")
    if not api_key and not no_auth and not is_loopback(host):
        raise VecflowError(f"--host {host}: not a loopback address and no API key: every endpoint would be open "
                           f"to the network; give --api-key KEY (or set ${API_KEY_ENV}), or --no-auth to accept "
                           f"the risk explicitly")


def require_key(api_key: str):
    """A FastAPI dependency that lets only ``Authorization: Bearer <api_key>`` through (401 otherwise)."""
    expected = api_key.encode("utf-8")

    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(SCHEME)) -> None:
        given = credentials.credentials.encode("utf-8", "surrogateescape") if credentials else b""
        if not (credentials and hmac.compare_digest(given, expected)):
            raise HTTPException(status_code=401, headers={"WWW-Authenticate": "Bearer"},
                                detail="missing or wrong API key: send the header 'Authorization: Bearer <key>'")

    return check
