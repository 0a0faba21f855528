"""The JSON bodies of the API, as pydantic models: they are the OpenAPI schema of ``/docs`` and ``/openapi.json``.

Routes whose answers are large (masks, tensors) build them as plain dicts and return them directly; the models here
still describe them, and ``tests/test_serve.py`` checks real answers against them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "ClassArea",
    "ClassEntry",
    "ErrorBody",
    "Health",
    "Info",
    "Limits",
    "Prediction",
    "Probabilities",
    "V2InferRequest",
    "V2InferResponse",
    "V2ModelMetadata",
    "V2RequestedOutput",
    "V2ServerMetadata",
    "V2Tensor",
    "V2TensorMetadata",
]


class ErrorBody(BaseModel):
    """Every refusal and failure: one line saying what was wrong and how to fix it."""

    error: str


class Health(BaseModel):
    status: str = Field(description="'ready' (HTTP 200), 'warming up' or why the warm-up failed (HTTP 503)")


class ClassEntry(BaseModel):
    index: int
    name: str
    color: list[int] = Field(description="RGB, 0..255", min_length=3, max_length=3)


class ClassArea(ClassEntry):
    pixels: int = Field(description="pixels of the mask labelled with this class")
    share: float = Field(description="pixels / (width x height)")


class Probabilities(BaseModel):
    shape: list[int] = Field(description="[K, H, W]")
    dtype: Literal["float32"]
    byte_order: Literal["little"]
    data: str = Field(description="base64 of the row-major float32 values")


class Prediction(BaseModel):
    """The JSON answer of ``POST /predict?format=json``."""

    model: str
    width: int
    height: int
    classes: list[ClassArea]
    mask_png: str = Field(description="base64 of the palette PNG that format=png returns (pixel value = class)")
    probabilities: Probabilities | None = Field(None, description="softmax per class, with probabilities=true")


class Limits(BaseModel):
    max_pixels: int
    max_body_bytes: int
    max_batch_size: int
    max_wait_ms: float
    max_queue: int


class Info(BaseModel):
    """``GET /info``: what the model is and how it runs."""

    model: str
    classes: list[ClassEntry]
    bands: int = Field(description="image bands the model takes (3: RGB)")
    backend: str = Field(description="torch, onnxruntime or openvino")
    precision: str = Field(description="what the convolutions compute in: fp32, bf16, fp16 or int8")
    device: str
    tile_size: list[int] | str | None = Field(description="sliding window [h, w], 'auto', or null (whole images)")
    scales: list[float]
    flip: bool
    limits: Limits
    ready: bool
    queued: int = Field(description="images waiting for the model or running now")


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any size")


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(description="the values, flat or nested, row-major")


class V2RequestedOutput(BaseModel):
    name: Literal["mask", "probabilities"]
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    """Open Inference Protocol v2 inference request (JSON)."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor] = Field(min_length=1, max_length=1, description="one tensor of images: [N, H, W, B]")
    outputs: list[V2RequestedOutput] | None = Field(None, description="default: the mask")


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[V2Tensor]
