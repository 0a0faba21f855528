"""The Open Inference Protocol v2 (KServe, Triton, Seldon MLServer), REST with JSON tensors.

The model takes one input tensor ``image`` of shape ``[N, H, W, B]`` (or ``[H, W, B]``; ``[H, W]`` for one band)
in ``UINT8``, ``UINT16`` or ``FP32``, holding image values as a decoded file holds them (the decoder's rules apply:
8-bit data as it is, wider data scaled), and returns ``mask`` ``[N, H, W]`` (``UINT8`` class indices) and, when
asked for in ``outputs``, ``probabilities`` ``[N, K, H, W]`` (``FP32``). The images of one request, and those of
concurrent requests, are batched as ``/predict``'s are. The binary tensor extension is not implemented.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from fcnseg.serve.config import fcnseg_version
from fcnseg.serve.schemas import ErrorBody, V2InferRequest, V2InferResponse, V2ModelMetadata, V2ServerMetadata
from fcnseg.serve.service import Service

__all__ = ["v2_router"]

_ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody} for status in (400, 401, 404, 413, 422, 503)}


def _tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    datatype = {np.dtype(np.uint8): "UINT8", np.dtype(np.float32): "FP32"}.get(array.dtype, "INT64")
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": array.ravel().tolist()}


def v2_router(service: Service, auth: list[Any]) -> APIRouter:
    """The ``/v2`` routes for ``service``'s model; ``auth``: the API key dependencies (none on the health checks)."""
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])
    name = service.config.model_name

    def check_name(model_name: str) -> None:
        if model_name != name:
            raise HTTPException(404, f"model {model_name!r} is not served here; this server serves {name!r}")

    @router.get("", response_model=V2ServerMetadata, dependencies=auth, responses=_ERRORS)
    async def server_metadata() -> dict[str, Any]:
        return {"name": "fcnseg", "version": fcnseg_version(), "extensions": []}

    @router.get("/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/health/ready", responses={503: {"description": "warming up"}})
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": service.ready}, status_code=200 if service.ready else 503)

    @router.get("/models/{model_name}/ready", responses={404: {"model": ErrorBody}, 503: {"description": "warming up"}})
    async def model_ready(model_name: str) -> JSONResponse:
        check_name(model_name)
        return JSONResponse({"name": name, "ready": service.ready}, status_code=200 if service.ready else 503)

    @router.get("/models/{model_name}", response_model=V2ModelMetadata, dependencies=auth, responses=_ERRORS)
    async def model_metadata(model_name: str) -> dict[str, Any]:
        check_name(model_name)
        k, bands = len(service.classes.names), service.predictor.bands
        return {
            "name": name,
            "versions": [],
            "platform": f"fcnseg_{service.predictor.backend}",
            "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, -1, bands]}],
            "outputs": [
                {"name": "mask", "datatype": "UINT8", "shape": [-1, -1, -1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, k, -1, -1]},
            ],
        }

    @router.post("/models/{model_name}/infer", response_model=V2InferResponse, dependencies=auth, responses=_ERRORS)
    async def infer(model_name: str, request: V2InferRequest) -> JSONResponse:
        """Segment the images of the input tensor (``UINT8``, ``UINT16`` or ``FP32``, ``[N, H, W, B]``)."""
        check_name(model_name)
        wanted = [output.name for output in request.outputs] if request.outputs else ["mask"]
        tensor = request.inputs[0]
        images = await service.decode_tensor({"datatype": tensor.datatype, "shape": tensor.shape, "data": tensor.data})
        probs = "probabilities" in wanted
        results = await asyncio.gather(*(service.segment(image, probs) for image in images))
        answer: dict[str, Any] = {"model_name": name, "outputs": []}
        if request.id is not None:
            answer["id"] = request.id
        for output in ("mask", "probabilities"):
            if output in wanted:
                array = np.stack([result[output == "probabilities"] for result in results])
                answer["outputs"].append(await run_in_threadpool(_tensor, output, array))
        return JSONResponse(answer)

    return router
