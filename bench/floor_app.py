"""The floor: a FastAPI endpoint that reads the body and answers a constant prediction.

Served by uvicorn with the options ``registry-gateway serve`` passes (gateway/cli.py),
so the difference to the gateway is the gateway's own work: routing, parsing, predict.
Keep the ``uvicorn.run`` call below in step with gateway/cli.py.

``--bare`` serves the same answer from a bare ASGI callable instead: uvicorn alone, no
framework. The gateway answers predict paths on bare ASGI too (gateway/protocols/mlflow_predict.py),
so this is the floor it is really up against.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response

_ANSWER = b'{"predictions": [2]}'


def create_app() -> FastAPI:
    app = FastAPI()

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        await request.body()
        return Response(_ANSWER, media_type="application/json")

    @app.get("/health/ready")
    async def ready() -> Response:
        return Response(b'{"status": "ok"}', media_type="application/json")

    return app


def create_bare_app() -> Callable[..., Awaitable[None]]:
    async def app(scope: dict[str, Any], receive: Callable[..., Awaitable[Any]], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/health/ready":
            answer = b'{"status": "ok"}'
        else:
            answer = _ANSWER
            while (await receive()).get("more_body", False):
                pass
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--bare", action="store_true", help="A bare ASGI callable instead of FastAPI.")
    parser.add_argument("--no-access-log", action="store_true", help="uvicorn's access log off.")
    args = parser.parse_args()
    uvicorn.run(
        "floor_app:create_bare_app" if args.bare else "floor_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=1,
        log_level=args.log_level,
        timeout_graceful_shutdown=30,
        proxy_headers=True,
        access_log=not args.no_access_log,
    )


if __name__ == "__main__":
    main()
