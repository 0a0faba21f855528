"""``fcnseg serve`` through FastAPI's TestClient: the masks ``fcnseg predict`` writes, JSON, the Open Inference
Protocol v2, batching, the API key, and refusals of bad input (each a 4xx with one line of JSON, the server serving
on).

Most tests serve small generated images with a per-pixel colour classifier (a 1x1 convolution: dark, red, green,
blue), whose masks hold every class; the test against ``fcnseg predict`` uses real CamVid images and the FCN of
the short CamVid training run of ``conftest.camvid_run``.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CAMVID, REPO, require
from PIL import Image
from test_inference_predictor import COLORS, MEAN, NAMES, STD, K, smooth_image
from torch import nn

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from fcnseg.cli.inference_args import checked_model_file, predictor_options
from fcnseg.cli.main import build_parser, main
from fcnseg.cli.serve import serve_config
from fcnseg.inference.predictor import Predictor
from fcnseg.serve.app import create_app
from fcnseg.serve.config import ServeConfig, default_max_pixels
from fcnseg.serve.schemas import Info, Prediction, V2InferResponse, V2ModelMetadata


def colour_predictor() -> Predictor:
    """Classes by colour: a 1x1 convolution scoring dark, red, green and blue pixels (``NAMES``)."""
    model = nn.Conv2d(3, K, kernel_size=1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0, -1, -1], [2, -1, -1], [-1, 2, -1], [-1, -1, 2]])[:, :, None, None])
        model.bias.copy_(torch.tensor([-0.5, 0, 0, 0]))
    return Predictor(model, classes={"names": NAMES, "colors": COLORS}, mean=MEAN, std=STD, precision="fp32")


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return colour_predictor()


def wait_ready(client: TestClient) -> None:
    for _ in range(1200):
        if client.get("/health").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("the server did not become ready in 60 s")


@contextmanager
def serving(predictor: Predictor, **settings) -> Iterator[TestClient]:
    """A started app (its model warmed up) for ``predictor``; settings override :class:`ServeConfig`'s."""
    config = ServeConfig(**({"model_name": "tiny", "max_wait_ms": 5.0, "warmup_size": (32, 32)} | settings))
    with TestClient(create_app(predictor, config)) as client:
        wait_ready(client)
        yield client


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` grey pixels, with almost no data: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def decoded(png: bytes) -> tuple[np.ndarray, list[list[int]]]:
    """A palette PNG's indices ``(H, W)`` and its palette's first ``K`` colours."""
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "P"
        return np.asarray(image), np.asarray(image.getpalette()).reshape(-1, 3)[:K].tolist()


def assert_error(response, status: int, *words: str) -> None:
    """A refusal: ``status`` and a body of exactly ``{"error": "<one line>"}`` that mentions ``words``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and "\n" not in body["error"] and body["error"], body
    for word in words:
        assert word in body["error"], body


def test_predict_returns_the_palette_mask_and_json_of_predictor(predictor: Predictor, tmp_path: Path) -> None:
    image = tmp_path / "street.png"
    Image.fromarray(smooth_image(45, 61)).save(image)
    expected, expected_probs = predictor.predict(image, return_probs=True)
    with serving(predictor) as client:
        upload = client.post("/predict", files={"file": ("street.png", image.read_bytes(), "image/png")})
        raw = client.post("/predict", content=image.read_bytes(), headers={"Content-Type": "image/png"})
        answer = client.post("/predict?format=json&probabilities=true", content=image.read_bytes())
        by_accept = client.post("/predict", content=image.read_bytes(), headers={"Accept": "application/json"})
    for response in (upload, raw):
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        mask, palette = decoded(response.content)
        np.testing.assert_array_equal(mask, expected)
        assert palette == COLORS
    assert answer.status_code == 200 and by_accept.json()["mask_png"] == answer.json()["mask_png"]
    body = Prediction.model_validate(answer.json())
    assert (body.width, body.height, body.model) == (61, 45, "tiny")
    np.testing.assert_array_equal(decoded(base64.b64decode(body.mask_png))[0], expected)
    counts = np.bincount(expected.ravel(), minlength=K)
    assert (counts > 0).all()  # every class appears: the comparisons below are not of a constant mask
    assert [c.name for c in body.classes] == NAMES and [c.color for c in body.classes] == COLORS
    assert [c.pixels for c in body.classes] == counts.tolist()
    np.testing.assert_allclose([c.share for c in body.classes], counts / expected.size)
    probs = body.probabilities
    assert probs is not None and probs.shape == [K, 45, 61]
    values = np.frombuffer(base64.b64decode(probs.data), "<f4").reshape(probs.shape)
    np.testing.assert_allclose(values, expected_probs, atol=1e-6)


def test_served_masks_equal_those_fcnseg_predict_writes_on_camvid(camvid_run, tmp_path: Path) -> None:
    """Real CamVid images through the CLI's own flags: `predict` writes files, `serve` answers requests."""
    checkpoint = camvid_run[0] / "best.pt"
    files = sorted((require(CAMVID) / "test").glob("*.png"))[:3] + sorted((CAMVID / "val").glob("*.png"))[:1]
    out = tmp_path / "predicted"
    assert main(["predict", str(checkpoint), *map(str, files), "--out", str(out)]) == 0
    args = build_parser("serve").parse_args(["serve", str(checkpoint)])
    served = Predictor.from_checkpoint(checked_model_file(args), **predictor_options(args))
    app = create_app(served, serve_config(args))
    with TestClient(app) as client:
        wait_ready(client)
        for file in files:
            with Image.open(out / f"{file.stem}.png") as written:
                expected, palette = np.asarray(written), written.getpalette()
            response = client.post("/predict", files={"file": (file.name, file.read_bytes(), "image/png")})
            assert response.status_code == 200, response.text
            with Image.open(io.BytesIO(response.content)) as mask:
                np.testing.assert_array_equal(np.asarray(mask), expected)
                assert mask.getpalette() == palette
            pixels = np.asarray(Image.open(file).convert("RGB"))
            tensor = {
                "name": "image",
                "shape": list(pixels.shape),
                "datatype": "UINT8",
                "data": pixels.ravel().tolist(),
            }
            infer = client.post(f"/v2/models/{checkpoint.stem}/infer", json={"inputs": [tensor]})
            assert infer.status_code == 200, infer.text
            output = infer.json()["outputs"][0]
            assert output["shape"] == [1, *expected.shape]
            np.testing.assert_array_equal(np.asarray(output["data"]).reshape(expected.shape), expected)
        assert len(np.unique(expected)) > 1  # a trained model's mask, not one class everywhere


def test_bad_uploads_get_one_line_json_errors_and_the_server_serves_on(predictor: Predictor, tmp_path: Path) -> None:
    import tifffile

    good = png_bytes(smooth_image(40, 52))
    expected = predictor.predict(Image.open(io.BytesIO(good)))
    png = {"Content-Type": "image/png"}
    four_bands = io.BytesIO()
    tifffile.imwrite(four_bands, np.zeros((20, 30, 4), np.uint16), photometric="minisblack", planarconfig="contig")
    bad = [  # (request, status, words the error names)
        ({"content": b"", "headers": png}, 400, ["empty"]),
        ({"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415, ["text/plain"]),
        ({"content": good, "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415, ["urlencoded"]),
        ({"content": b"this is not an image", "headers": png}, 415, ["not an image"]),
        ({"content": good[: len(good) // 2], "headers": png}, 400, ["truncated"]),
        ({"content": png_claiming(30_000, 30_000), "headers": png}, 413, ["decompression bomb"]),
        ({"content": png_claiming(300, 200), "headers": png}, 413, ["300x200", "--max-pixels"]),
        ({"content": b"\0" * 150_000, "headers": png}, 413, ["--max-body-mb"]),
        ({"content": b"\0" * 500_000, "headers": png}, 413, ["--max-body-mb"]),  # beyond what is read on
        ({"content": four_bands.getvalue(), "headers": {"Content-Type": "image/tiff"}}, 422, ["4 bands", "takes 3"]),
        ({"files": {"note": (None, "no file here")}}, 400, ["no file"]),
        ({"files": [("file", ("a.png", good, "image/png")), ("file", ("b.png", good, "image/png"))]}, 400, ["files"]),
        ({"files": {"file": ("a.txt", b"plain text", "text/plain")}}, 415, ["not an image"]),
    ]
    with serving(predictor, max_pixels=20_000, max_body_bytes=100_000) as client:
        for request, status, words in bad:
            assert_error(client.post("/predict", **request), status, *words)
            answer = client.post("/predict", content=good, headers=png)
            assert answer.status_code == 200
            np.testing.assert_array_equal(decoded(answer.content)[0], expected)
        assert_error(client.post("/predict?probabilities=true", content=good), 400, "format=json")
        assert_error(client.post("/predict?format=gif", content=good), 422, "format")
        assert_error(client.get("/predict"), 405)
        assert_error(client.get("/no/such/route"), 404)
        grey = png_bytes(smooth_image(40, 52)[..., 0])
        assert client.post("/predict", content=grey, headers=png).status_code == 200  # grey is RGB's grey replica


def test_api_key_guards_every_route_but_health(predictor: Predictor, tmp_path: Path) -> None:
    good = png_bytes(smooth_image(24, 32))
    with serving(predictor, api_key="s3cret") as client:
        for path in ("/health", "/v2/health/ready", "/v2/health/live", "/v2/models/tiny/ready"):
            assert client.get(path).status_code == 200, path
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"}):
            for method, path in (("GET", "/info"), ("POST", "/predict"), ("GET", "/v2"), ("GET", "/v2/models/tiny")):
                response = client.request(method, path, headers=headers, content=good if method == "POST" else None)
                assert_error(response, 401, "API key")
                assert response.headers["www-authenticate"] == "Bearer"
        key = {"Authorization": "Bearer s3cret"}
        assert client.get("/info", headers=key).status_code == 200
        assert client.post("/predict", content=good, headers=key).status_code == 200
        assert client.get("/v2/models/tiny", headers=key).status_code == 200
        schema = client.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        assert "security" in schema["paths"]["/predict"]["post"] and "security" not in schema["paths"]["/health"]["get"]


def test_open_inference_protocol_v2(predictor: Predictor) -> None:
    images = np.stack([smooth_image(30, 40, seed=1), smooth_image(30, 40, seed=2)])  # (2, H, W, 3)
    expected = predictor.predict_batch(list(images), return_probs=True, batch_size=2)
    with serving(predictor) as client:
        assert client.get("/v2").json()["name"] == "fcnseg"
        meta = V2ModelMetadata.model_validate(client.get("/v2/models/tiny").json())
        assert meta.inputs[0].shape == [-1, -1, -1, 3] and [o.name for o in meta.outputs] == ["mask", "probabilities"]
        tensor = {"name": "image", "shape": list(images.shape), "datatype": "UINT8", "data": images.tolist()}
        request = {"id": "r1", "inputs": [tensor], "outputs": [{"name": "mask"}, {"name": "probabilities"}]}
        answer = V2InferResponse.model_validate(client.post("/v2/models/tiny/infer", json=request).json())
        assert answer.id == "r1" and answer.model_name == "tiny"
        mask, probs = answer.outputs
        assert (mask.datatype, mask.shape, probs.datatype, probs.shape) == (
            "UINT8",
            [2, 30, 40],
            "FP32",
            [2, K, 30, 40],
        )
        np.testing.assert_array_equal(np.reshape(mask.data, mask.shape), np.stack([m for m, _ in expected]))
        np.testing.assert_allclose(np.reshape(probs.data, probs.shape), np.stack([p for _, p in expected]), atol=1e-6)
        as_float = dict(tensor, datatype="FP32", data=(images[:1] / 255).astype(np.float32).ravel().tolist())
        as_float["shape"] = [30, 40, 3]
        single = client.post("/v2/models/tiny/infer", json={"inputs": [as_float]}).json()["outputs"]
        assert [o["name"] for o in single] == ["mask"]
        np.testing.assert_array_equal(np.reshape(single[0]["data"], (30, 40)), expected[0][0])
        infer = "/v2/models/tiny/infer"
        assert_error(client.post("/v2/models/other/infer", json=request), 404, "tiny")
        assert_error(client.post(infer, json={"inputs": [dict(tensor, datatype="BYTES")]}), 400, "UINT8")
        assert_error(client.post(infer, json={"inputs": [dict(tensor, shape=[2, 30, 41, 3])]}), 400, "shape")
        assert_error(client.post(infer, json={"inputs": [dict(tensor, shape=[1, 30, 80, 4])]}), 422, "4 bands")
        assert_error(client.post(infer, json={"inputs": [dict(tensor, data=[[300]])]}), 400, "UINT8")
        assert_error(client.post(infer, json={"inputs": []}), 422, "inputs")
        assert_error(client.post(infer, content=b"{not json", headers={"Content-Type": "application/json"}), 422)


def test_concurrent_requests_of_one_size_share_a_forward_pass(
    predictor: Predictor, tmp_path: Path, monkeypatch
) -> None:
    """4 concurrent requests of one size: one forward of 4; 2 + 2 of two sizes: one forward per size."""
    calls: list[list[tuple[int, int]]] = []
    original = predictor.predict_batch

    def counting(images, **options):
        calls.append([predictor.load(image).size for image in images])
        return original(images, **options)

    monkeypatch.setattr(predictor, "predict_batch", counting)
    same = [png_bytes(smooth_image(40, 48, seed=i)) for i in range(4)]
    mixed = [png_bytes(smooth_image(*size, seed=i)) for i, size in enumerate([(40, 48), (56, 40), (40, 48), (56, 40)])]
    # A long wait: a batch runs when it is full, so the grouping cannot depend on timing.
    for max_batch_size, bodies, expected_calls in ((4, same, [[(48, 40)] * 4]), (2, mixed, None)):
        with serving(predictor, max_batch_size=max_batch_size, max_wait_ms=60_000) as client:
            calls.clear()  # the warm-up's
            with ThreadPoolExecutor(len(bodies)) as pool:
                answers = list(pool.map(lambda body: client.post("/predict", content=body), bodies))
        assert [a.status_code for a in answers] == [200] * len(bodies)
        if expected_calls is not None:
            assert calls == expected_calls
        else:
            assert sorted(calls) == [[(40, 56)] * 2, [(48, 40)] * 2]
        for body, answer in zip(bodies, answers, strict=True):
            alone = original([Image.open(io.BytesIO(body))])[0]
            assert (decoded(answer.content)[0] != alone).mean() < 1e-3  # batched = alone, up to float rounding


def test_health_is_ready_only_after_warm_up(predictor: Predictor, monkeypatch) -> None:
    import threading

    release = threading.Event()
    original = predictor.predict

    def slow_warm_up(*args, **kwargs):
        assert release.wait(60)
        return original(*args, **kwargs)

    monkeypatch.setattr(predictor, "predict", slow_warm_up)
    config = ServeConfig(model_name="tiny", warmup_size=(32, 32))
    with TestClient(create_app(predictor, config)) as client:
        assert client.get("/health").json() == {"status": "warming up"}
        assert client.get("/health").status_code == 503 and client.get("/v2/health/ready").status_code == 503
        assert client.get("/info").json()["ready"] is False
        release.set()
        wait_ready(client)
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert Info.model_validate(client.get("/info").json()).ready


def test_info_page_and_api_docs_need_no_network(predictor: Predictor) -> None:
    with serving(predictor, max_batch_size=3) as client:
        info = Info.model_validate(client.get("/info").json())
        assert (info.bands, info.backend, info.precision, info.limits.max_batch_size) == (3, "torch", "fp32", 3)
        assert [c.name for c in info.classes] == NAMES and [c.color for c in info.classes] == COLORS
        page = client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        docs = client.get("/docs")
        assert docs.status_code == 200
        for text in (page.text, docs.text, client.get("/static/page.js").text):
            assert "http://" not in text and "https://" not in text  # everything from this server
        for asset in ("/static/page.js", "/static/page.css"):
            assert client.get(asset).status_code == 200
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            assert asset in docs.text
        paths = client.get("/openapi.json").json()["paths"]
        body = paths["/predict"]["post"]["requestBody"]["content"]
        assert {"multipart/form-data", "image/png", "image/jpeg", "image/tiff"} <= set(body)
        answers = paths["/predict"]["post"]["responses"]
        assert {"image/png", "application/json"} <= set(answers["200"]["content"])
        assert {"400", "413", "415", "422"} <= set(answers)
        for route in (
            "/health",
            "/info",
            "/v2/health/ready",
            "/v2/models/{model_name}",
            "/v2/models/{model_name}/infer",
        ):
            assert route in paths, route


def test_serve_flags(tmp_path: Path, monkeypatch) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    monkeypatch.setenv("FCNSEG_API_KEY", "from-env")
    args = build_parser("serve").parse_args(["serve", str(model), "--max-batch-size", "1", "--max-body-mb", "0.5"])
    config = serve_config(args)
    assert (args.host, args.port, config.api_key, config.model_name) == ("127.0.0.1", 8000, "from-env", "model")
    assert (config.max_batch_size, config.max_body_bytes) == (1, 2**19)
    assert not hasattr(args, "batch_size")  # batches are --max-batch-size's
    assert main(["serve", str(model), "--max-batch-size", "0"]) == 2
    gib = 2**30
    assert default_max_pixels(24 * gib) == 12 * 2**20  # --max-pixels: half the memory at 1 KiB per pixel,
    assert default_max_pixels(gib) == 10**6 and default_max_pixels(1024 * gib) == 10**8  # within 1 and 100 MP
    assert main(["serve", str(model), "--max-pixels", "0"]) == 2


def test_import_fcnseg_and_predict_do_not_load_the_web_stack() -> None:
    probe = (
        "import sys, fcnseg, fcnseg.inference.predictor, fcnseg.cli.serve\n"  # `fcnseg --help` imports cli.serve
        "from fcnseg.cli.main import build_parser\n"
        "build_parser('predict'); build_parser('serve')\n"
        "print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().replace("'", '"')) == []
