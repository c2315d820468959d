"""Jobs over HTTP (docs/user-guide.md: Jobs): submit one (202 and ``Location``), follow it,
list them, cancel one, fetch an inline job's result. Read the request, call the job service,
shape the answer; nothing more."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from gateway.admission.access import Access, requires
from gateway.http.api_examples import IRIS_COLUMNS, PREDICT_ERRORS, error_responses
from gateway.http.model_routes import NameParam, VersionParam
from gateway.http.request_body import read_body
from gateway.jobs.views import MAX_WAIT_SECONDS, job_document
from gateway.process import Services
from gateway.wire.api_schemas import ErrorBody

router = APIRouter()

JobState = Literal["queued", "running", "succeeded", "partial", "failed", "cancelled"]
_SUBMITTED: dict[int | str, dict[str, Any]] = {
    202: {"description": "Queued: the job's id and state; its address in Location"},
    400: {"model": ErrorBody, "description": "Not a job (its body names the problem), or an input or output refused"},
    429: {"model": ErrorBody, "description": "GATEWAY_JOBS_MAX_OPEN jobs are open already"},
    503: {
        "model": ErrorBody,
        "description": "The input's or output's store (S3) or the state database did not answer now: "
        "nothing was queued; try again after Retry-After",
    },
}
_FOLLOWED: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such job (or not one this caller may see)"}
}
_SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "examples": {
                    # beside name=iris, as the predict routes' bodies (they run as they are on the demo)
                    "inline": {
                        "value": {
                            "request": {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}}
                        }
                    },
                    "files": {
                        "value": {
                            "input": "s3://bucket/scoring/*.parquet",
                            "output": "s3://bucket/scored/",
                            "output_format": "parquet",
                            "id_column": "id",
                        }
                    },
                }
            }
        },
    }
}


def _json(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type="application/json", headers=headers)


async def _submit(request: Request, name: str, version: str | None) -> Response:
    services: Services = request.app.state.services
    body = await read_body(request.receive, request.headers.get("content-length"), services.settings.max_body_bytes)
    caller = await services.gate.caller(request.scope["headers"])
    job = await services.jobs.submit(name, version, body, caller)
    return _json(job_document(job), 202, {"Location": f"/jobs/{job.id}"})


@router.post(
    "/models/{name}/jobs",
    responses={**error_responses(PREDICT_ERRORS, "unknown_model"), **_SUBMITTED},
    status_code=202,
    openapi_extra=_SUBMIT_BODY,
    tags=["jobs"],
    summary="Submit a job for the model's default version: an asynchronous prediction or a batch over files",
)
@requires(Access.PREDICT)
async def submit_job(request: Request, name: NameParam) -> Response:
    return await _submit(request, name, None)


@router.post(
    "/models/{name}/versions/{version}/jobs",
    responses={
        **error_responses(PREDICT_ERRORS, "bad_selector", "unknown_model", "unknown_version", "unknown_alias"),
        **_SUBMITTED,
    },
    status_code=202,
    openapi_extra=_SUBMIT_BODY,
    tags=["jobs"],
    summary="Submit a job for a version (an alias is resolved now and the version pinned)",
)
@requires(Access.PREDICT)
async def submit_version_job(request: Request, name: NameParam, version: VersionParam) -> Response:
    return await _submit(request, name, version)


@router.get("/jobs", tags=["jobs"], summary="The latest jobs (at most 100), of one model or state")
@requires(Access.LIST)
async def list_jobs(request: Request, model: str | None = None, state: JobState | None = None) -> Response:
    services: Services = request.app.state.services
    caller = await services.gate.caller(request.scope["headers"])
    jobs = await services.jobs.list(caller, model=model, state=state)
    return _json({"jobs": [job_document(job) for job in jobs]})


@router.api_route(
    "/jobs/{job_id}",
    methods=["GET", "DELETE"],
    responses=_FOLLOWED,
    tags=["jobs"],
    summary="GET: a job's state, progress and failures (with wait: once it ended, or after that many seconds). "
    "DELETE: cancel it (the key that submitted it, or admin); its chunks stop within a heartbeat",
)
@requires(Access.LIST)
async def job(
    request: Request,
    job_id: str,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="GET: answer once the job has ended, or after this many seconds if it has not "
            f"(at most {MAX_WAIT_SECONDS:g}): follow a job without polling. 0: at once.",
        ),
    ] = 0.0,
) -> Response:
    # One route for both methods: a 405 names every method the path takes (Allow), as for any path.
    services: Services = request.app.state.services
    caller = await services.gate.caller(request.scope["headers"])
    if request.method == "DELETE":
        return _json(job_document(await services.jobs.cancel(job_id, caller)))
    return _json(job_document(await services.jobs.read(job_id, caller, wait=wait)))


@router.get(
    "/jobs/{job_id}/result",
    responses={**_FOLLOWED, 409: {"model": ErrorBody, "description": "No result: not done, failed, or a file job"}},
    tags=["jobs"],
    summary="An inline job's answer (the predict response), until its retention ends",
)
@requires(Access.LIST)
async def get_job_result(request: Request, job_id: str) -> Response:
    services: Services = request.app.state.services
    result = await services.jobs.result(job_id, await services.gate.caller(request.scope["headers"]))
    return Response(result, media_type="application/json")
