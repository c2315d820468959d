"""HTTP routes: read the request, call the service, shape the response. Nothing more."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from gateway import predict_endpoint
from gateway.schemas import ErrorBody, ModelDetail, ModelList, PredictionBody, VersionDetail
from gateway.services import Services

IRIS_COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Malformed body, wrong columns or types, or a bad version selector",
        404: "Unknown model, version or alias",
        409: "The version exists but is not READY",
        413: "Body larger than GATEWAY_MAX_BODY_BYTES",
        415: "Content type other than application/json or text/csv",
        503: (
            "The version failed to load, MLflow is unreachable for a model never seen, "
            "or the version's queue is full (GATEWAY_MAX_QUEUE; see Retry-After)"
        ),
        504: "Predict slower than GATEWAY_PREDICT_TIMEOUT_SECONDS",
    }.items()
}

_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "MLflow's scoring protocol, exactly as `mlflow models serve` takes it.",
        "content": {
            "application/json": {
                "schema": {"type": "object"},
                "examples": {
                    "dataframe_split": {
                        "summary": "Columns and rows (the demo's iris classifier)",
                        "value": {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}},
                    },
                    "dataframe_records": {
                        "summary": "One object per row",
                        "value": {"dataframe_records": [dict(zip(IRIS_COLUMNS, [6.7, 3.0, 5.2, 2.3], strict=True))]},
                    },
                    "instances": {
                        "summary": "TF-serving style rows",
                        "value": {"instances": [dict(zip(IRIS_COLUMNS, [5.9, 3.0, 4.2, 1.5], strict=True))]},
                    },
                    "inputs_tensor": {
                        "summary": "A tensor (the demo's torch model, 'tiny-torch')",
                        "value": {"inputs": [[0.1, 0.2, 0.3, 0.4]]},
                    },
                },
            },
            "text/csv": {
                "schema": {"type": "string"},
                "example": ",".join(IRIS_COLUMNS) + "\n5.1,3.5,1.4,0.2\n",
            },
        },
    }
}

NameParam = Annotated[str, Path(description="Registered model name", examples=["iris"])]
VersionParam = Annotated[
    str, Path(description="A version number, an alias such as `champion`, or `latest`", examples=["champion"])
]

# The predict routes: GatewayApp answers these two paths on bare ASGI before FastAPI sees
# them (gateway.predict_endpoint says why). They are declared here for /docs, and work the
# same for an app that mounts this router: both ways call predict_endpoint.answer. They
# read their parameters themselves, so they are documented by hand.


def _documented(name: str, where: str, description: str, example: str | None = None) -> dict[str, Any]:
    """An OpenAPI parameter entry for a parameter the route reads itself."""
    entry: dict[str, Any] = {"name": name, "in": where, "required": where == "path", "schema": {"type": "string"}}
    if example is not None:
        entry["example"] = example
    return entry | {"description": description}


_NAME_DOC = _documented("name", "path", "Registered model name", "iris")
_VERSION_DOC = _documented("version", "path", "A version number, an alias such as `champion`, or `latest`", "champion")
_HEADER_DOC = _documented(
    "X-Model-Version", "header", "A version number, an alias or `latest`; on the versioned path it must agree with it"
)

router = APIRouter()


@router.post(
    "/models/{name}/versions/{version}/predict",
    response_model=PredictionBody,
    responses=_ERRORS,
    openapi_extra={**_PREDICT_BODY, "parameters": [_NAME_DOC, _VERSION_DOC, _HEADER_DOC]},
    tags=["predict"],
    summary="Predict with a chosen version",
)
async def predict_version(request: Request) -> Response:
    params = request.path_params
    return await _predict(request, params["name"], params["version"])


@router.post(
    "/models/{name}/predict",
    response_model=PredictionBody,
    responses=_ERRORS,
    openapi_extra={**_PREDICT_BODY, "parameters": [_NAME_DOC, _HEADER_DOC]},
    tags=["predict"],
    summary="Predict with the version in X-Model-Version, else the default alias, else latest",
)
async def predict_default(request: Request) -> Response:
    return await _predict(request, request.path_params["name"], None)


async def _predict(request: Request, name: str, version: str | None) -> Response:
    services: Services = request.app.state.services
    result = await predict_endpoint.answer(services, request.scope["headers"], request.receive, name, version)
    return Response(result.body, media_type="application/json", headers=result.headers)


@router.get("/models", response_model=ModelList, responses={503: _ERRORS[503]}, tags=["models"])
async def list_models(request: Request) -> ModelList:
    services: Services = request.app.state.services
    return await services.inventory.models()


@router.get("/models/{name}", response_model=ModelDetail, responses={404: _ERRORS[404]}, tags=["models"])
async def get_model(request: Request, name: NameParam) -> ModelDetail:
    services: Services = request.app.state.services
    return await services.inventory.model(name)


@router.get(
    "/models/{name}/versions/{version}",
    response_model=VersionDetail,
    responses={404: _ERRORS[404], 400: _ERRORS[400]},
    tags=["models"],
)
async def get_version(request: Request, name: NameParam, version: VersionParam) -> VersionDetail:
    services: Services = request.app.state.services
    return await services.inventory.version(name, version)
