"""Read a request body without ever holding more than a limit of it."""

from __future__ import annotations

from fastapi import Request

from gateway.errors import MalformedRequest, PayloadTooLarge


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or PayloadTooLarge as soon as it (declared or streamed) passes ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedRequest(f"Content-Length '{declared}' is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(limit)
    return bytes(body)
