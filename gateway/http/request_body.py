"""Read a request body without ever holding more than a limit of it."""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import Receive

from gateway.errors import MalformedRequest, PayloadTooLarge


async def read_body(receive: Receive, content_length: str | None, limit: int) -> bytes:
    """The body, from ASGI ``receive``, or PayloadTooLarge as soon as it (declared or
    streamed) passes ``limit``; ClientDisconnect if the client leaves first."""
    if content_length is not None:
        if not content_length.isdigit():
            raise MalformedRequest(f"Content-Length '{content_length}' is not a number")
        if int(content_length) > limit:
            raise PayloadTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(limit)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
