"""The server's HTTP guards (ASGI middleware and FastAPI route/request classes), outside the model code.

- ``BodyLimit``: a body over ``--max-body-bytes`` gets 413 before anything parses it;
- ``CatchAll``: a bug answers a JSON 500 (logged) and the connection stays usable;
- ``JSONRoute``: request bodies parsed by ``loads_json`` (pydantic's fast parser, ``json.loads``' answers);
- ``json_content_type``: a body sent with another Content-Type than JSON gets 415 saying so (not a 422 about
  dictionaries that never names the content type);
- ``validation_details``: 422 details that say where and what, never the input.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import TypeAdapter

MAX_ERRORS_SHOWN = 10  # validation errors listed in one 422
LOG = logging.getLogger("vecflow.ship.serve")


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before anything parses it."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await self.reply(send, 400, "invalid Content-Length header")
            if int(length) > self.max_bytes:
                return await self.reply(send, 413, f"request body over {self.max_bytes} bytes")
        chunks, total = [], 0
        while True:  # read the whole (bounded) body, also when it comes chunked
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            if total > self.max_bytes:
                return await self.reply(send, 413, f"request body over {self.max_bytes} bytes")
            if not message.get("more_body", False):
                break
        body, delivered = b"".join(chunks), False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    @staticmethod
    async def reply(send, status: int, detail: str) -> None:
        payload = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        if status == 413:
            headers.append((b"connection", b"close"))  # the unread rest of the body is not waited for
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


ANY_JSON = TypeAdapter(Any)


def loads_json(body: bytes):
    """``json.loads(body)``, parsed by pydantic's JSON parser where it can (6x faster on a 5x384 context).

    That parser agrees with ``json.loads`` on every document it accepts (the same values, NaN, Infinity and big
    integers included) and refuses some that ``json.loads`` takes (lone surrogate escapes, a BOM, UTF-16 bodies);
    on any refusal ``json.loads`` parses the body, so every body gives what it gave before, errors included.
    """
    try:
        return ANY_JSON.validate_json(body)
    except ValueError:  # pydantic's ValidationError
        return json.loads(body)


class JSONRequest(Request):
    async def json(self):
        if not hasattr(self, "_json"):
            self._json = loads_json(await self.body())
        return self._json


def is_json_media_type(content_type: str | None) -> bool:
    """No Content-Type (FastAPI then parses the body as JSON), ``application/json`` or ``application/*+json``,
    any parameters (``; charset=utf-8``) and case allowed."""
    if content_type is None:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = media.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


UNSUPPORTED_MEDIA_TYPE = ("Content-Type must be application/json: send the body as JSON with the header "
                          "'Content-Type: application/json'")


async def json_content_type(request: Request) -> None:
    """A FastAPI dependency of the POST endpoints: a body declared as anything but JSON gets 415 saying what to
    send (the header itself is not echoed back)."""
    if not is_json_media_type(request.headers.get("content-type")):
        raise HTTPException(status_code=415, detail=UNSUPPORTED_MEDIA_TYPE)


class JSONRoute(APIRoute):
    """FastAPI's route with ``loads_json`` for request bodies (FastAPI's validation and errors unchanged)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route_handler(request: Request):
            return await handler(JSONRequest(request.scope, request.receive))

        return route_handler


class CatchAll:
    """ASGI middleware: a bug answers a JSON 500 and is logged; the connection stays usable for the next request.

    (A plain ASGI wrapper: Starlette's ``@app.middleware("http")`` spends a task group and memory streams on
    every request, a fifth of the event loop's time under load.)"""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception:  # noqa: BLE001 - the last line of defence, logged with its traceback
            LOG.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:  # too late for a 500: the server closes the connection
                raise
            await JSONResponse(status_code=500, content={"detail": "internal error (logged by the server)"})(
                scope, receive, send)



def validation_details(exc: RequestValidationError) -> list[dict]:
    """Where and what, never the input (it can be huge, or not even encodable as JSON)."""
    details = []
    for error in exc.errors()[:MAX_ERRORS_SHOWN]:
        loc = [part if isinstance(part, (int, str)) else str(part) for part in error.get("loc", ())]
        details.append({"loc": loc, "msg": str(error.get("msg", "invalid")), "type": str(error.get("type", ""))})
    return details


