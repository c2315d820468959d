"""Serve a prediction, knowing nothing of HTTP: choose the version, lease it, score.

Decoding, predict and encoding run together in one inference thread (one hop off the
event loop per request). The lease is returned when that thread finishes, not when the
request gives up, so a model is never unloaded under a predict still running.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gateway.cache import ModelCache
from gateway.catalog import Catalog, Resolved
from gateway.errors import AliasNotFound, PredictTimeout, SelectorConflict
from gateway.loader import LoadedModel
from gateway.scoring import decode, encode_predictions
from gateway.selectors import Selector, parse_selector


@dataclass(frozen=True, slots=True)
class Prediction:
    body: bytes  # the JSON response, ready to send
    served: Resolved


class InferenceService:
    def __init__(
        self,
        catalog: Catalog,
        cache: ModelCache,
        *,
        default_alias: str,
        predict_timeout_seconds: float,
        executor: ThreadPoolExecutor,
    ) -> None:
        self._catalog = catalog
        self._cache = cache
        self._default = parse_selector(default_alias)
        self._timeout = predict_timeout_seconds
        self._executor = executor

    async def choose(self, name: str, *, path: str | None = None, header: str | None = None) -> Resolved:
        """The concrete version a request is for (see README: choosing a version)."""
        if path is not None:
            chosen = await self._catalog.resolve(name, parse_selector(path))
            if header:
                other = await self._catalog.resolve(name, parse_selector(header))
                if other.version != chosen.version:
                    raise SelectorConflict(
                        name=name, path=path, header=header, path_version=chosen.version, header_version=other.version
                    )
            return chosen
        if header:
            return await self._catalog.resolve(name, parse_selector(header))
        if not self._catalog.knows(name):
            await self._catalog.look_again(name)  # registered a moment ago?
        try:
            # A known model without the default alias is served at latest: not a miss
            # worth asking the registry about again.
            return await self._catalog.resolve(name, self._default, look_again=False)
        except AliasNotFound:
            return await self._catalog.resolve(name, Selector("latest", "latest"))

    async def predict(self, served: Resolved, body: bytes, media_type: str) -> Prediction:
        lease = await self._cache.acquire(served.name, served.version)
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, score, lease.model, body, media_type)
        except BaseException:
            lease.release()
            raise

        def finished(done: asyncio.Future[bytes]) -> None:
            lease.release()
            if not done.cancelled():
                done.exception()  # a request that timed out never reads it; don't warn

        future.add_done_callback(finished)
        try:
            async with asyncio.timeout(self._timeout):
                # shield: a request that gives up must not pretend the thread stopped
                response = await asyncio.shield(future)
        except TimeoutError as exc:
            raise PredictTimeout(served.name, served.version, self._timeout) from exc
        return Prediction(response, served)


def score(model: LoadedModel, body: bytes, media_type: str) -> bytes:
    """Decode, predict, encode: the whole of one request's work, in one worker thread."""
    request = decode(body, media_type, model.metadata)
    return encode_predictions(model.predict(request))
