"""The floor: a FastAPI endpoint that reads the body and answers a constant prediction.

Served by uvicorn with the options ``registry-gateway serve`` passes (gateway/cli.py),
so the difference to the gateway is the gateway's own work: routing, parsing, predict.
Keep the ``uvicorn.run`` call below in step with gateway/cli.py.

``--bare`` serves the same answer from a bare ASGI callable instead: uvicorn alone, no
framework. The gateway answers predict paths on bare ASGI too (gateway/protocols/mlflow_predict.py),
so this is the floor it is really up against.

``--predicting MODEL_URI`` is the floor of a server that predicts: the bare callable, plus the
least any batching server does for a ``dataframe_split`` body of float columns (orjson to a
float64 array, a future in one queue drained by one task that concatenates whatever waits,
the flavor's own ``predict`` on it, each request's rows of the answer back as JSON), with the
same model loaded by ``mlflow.sklearn.load_model``. No routing, versions, checks, metrics or
ids: what is left between it and the gateway is the gateway's own work, and what is between
it and ``--bare`` is the model and batching, which any server pays.
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
        await send_json(send, answer)

    return app


async def send_json(send: Callable[..., Any], answer: bytes) -> None:
    """A 200 with a JSON body, as the floors answer."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def create_predicting_app(model_uri: str) -> Callable[..., Awaitable[None]]:
    import asyncio
    import copy
    from collections import deque

    import mlflow.sklearn
    import numpy as np
    import orjson

    model = mlflow.sklearn.load_model(model_uri)
    if "feature_names_in_" in model.__dict__:  # fitted on a frame: given arrays it would warn every call
        model = copy.copy(model)  # (as the gateway's fast path does: gateway/runtimes/worker/raw.py)
        del model.feature_names_in_
    waiting: deque[tuple[asyncio.Future[bytes], np.ndarray]] = deque()
    draining: list[asyncio.Task[None]] = []

    async def drain() -> None:
        try:
            while waiting:
                batch = list(waiting)
                waiting.clear()
                output = model.predict(np.concatenate([rows for _, rows in batch]))
                start = 0
                for future, rows in batch:
                    future.set_result(orjson.dumps({"predictions": output[start : start + len(rows)].tolist()}))
                    start += len(rows)
                await asyncio.sleep(0)  # the requests that arrived meanwhile, before the next batch
        finally:
            draining.clear()

    bare = create_bare_app()

    async def app(scope: dict[str, Any], receive: Callable[..., Awaitable[Any]], send: Callable[..., Any]) -> None:
        if scope["type"] != "http" or scope["path"] == "/health/ready":
            await bare(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        rows = np.array(orjson.loads(body)["dataframe_split"]["data"], dtype=np.float64)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        waiting.append((future, rows))
        if not draining:
            draining.append(loop.create_task(drain()))
        await send_json(send, await future)

    return app


def main() -> None:
    import functools

    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--bare", action="store_true", help="A bare ASGI callable instead of FastAPI.")
    parser.add_argument("--no-access-log", action="store_true", help="uvicorn's access log off.")
    parser.add_argument(
        "--predicting", metavar="MODEL_URI", help="The floor of a batching server predicting with this sklearn model."
    )
    args = parser.parse_args()
    if args.predicting:
        factory: Any = functools.partial(create_predicting_app, args.predicting)
    else:
        factory = "floor_app:create_bare_app" if args.bare else "floor_app:create_app"
    uvicorn.run(
        factory,
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
