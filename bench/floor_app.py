"""The floor: a FastAPI endpoint that reads the body and answers a constant prediction.

Served by uvicorn with the options ``registry-gateway serve`` passes (gateway/cli.py),
so the difference to the gateway is the gateway's own work: routing, parsing, predict.
Keep the ``uvicorn.run`` call below in step with gateway/cli.py.
"""

from __future__ import annotations

import argparse

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


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    uvicorn.run(
        "floor_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=1,
        log_level=args.log_level,
        timeout_graceful_shutdown=30,
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
