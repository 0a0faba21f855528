"""Georeferenced rasters: GeoTIFF in, georeferenced COG out, window by window (docs/geo.md).

Rasters are generated with a real CRS (UTM zones), a north-up and a rotated transform, 8- and 16-bit, 4 bands, a
nodata border and nodata holes. References are independent of the raster path: the whole array, read back with
tifffile and predicted in memory by :class:`Predictor`.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from fcnseg.cli.main import main
from fcnseg.core.checkpoint import make_checkpoint, save_checkpoint
from fcnseg.data.errors import DataError
from fcnseg.inference.predictor import Predictor
from fcnseg.inference.raster import PROB_SCALE, predict_raster
from fcnseg.inference.tiling import tile_spans
from fcnseg.inference.vector import write_polygons
from fcnseg.models import create_model

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import Affine  # noqa: E402

CLASSES = {"names": ["background", "water", "trees"], "colors": [[0, 0, 0], [0, 0, 255], [0, 160, 0]]}
NORTH_UP = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_200_000.0)
ROTATED = Affine.translation(300_000.0, 5_000_000.0) @ Affine.rotation(17.0) @ Affine.scale(2.5, -2.5)
BORDER = 70  # nodata rows and columns on the top and left: the first row and column of windows hold no data


def scene(height: int, width: int, bands: int, dtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(B, H, W)`` smooth values of ``dtype`` and the ``(H, W)`` validity: a nodata border and two holes."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max if dtype != "uint16" else 4095  # 12-bit data in a 16-bit container
    coarse = rng.uniform(0.1, 1.0, (bands, height // 16 + 2, width // 16 + 2))
    smooth = torch.nn.functional.interpolate(torch.tensor(coarse)[None], size=(height, width), mode="bilinear")[0]
    values = (smooth.numpy() * top).astype(dtype)
    valid = np.ones((height, width), bool)
    valid[:BORDER], valid[:, :BORDER] = False, False
    valid[height // 2 : height // 2 + 9, width // 3 : width // 3 + 13] = False
    valid[-20:-12, -30:-5] = False
    values[:, ~valid] = 0
    return values, valid


def write_raster(path: Path, values: np.ndarray, transform: Affine, crs: str | None, nodata: float | None = 0) -> Path:
    count, height, width = values.shape
    profile = {"driver": "GTiff", "height": height, "width": width, "count": count, "dtype": values.dtype.name}
    profile |= {"crs": crs, "transform": transform, "nodata": nodata, "tiled": True, "blockxsize": 64}
    with rasterio.open(path, "w", **profile | {"blockysize": 64}) as ds:
        ds.write(values)
    return path


def local_model(bands: int = 4, k: int = 3) -> nn.Module:
    """Two 3x3 convolutions: a receptive field of 5, so tiles with margins of 2 or more equal the whole image."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(bands, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, k, 3, padding=1)).eval()


def reference(predictor: Predictor, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask and probabilities of the whole ``(B, H, W)`` array predicted in memory."""
    return predictor.predict(np.moveaxis(values, 0, -1), return_probs=True)


@pytest.mark.parametrize(
    ("transform", "crs", "dtype"),
    [(NORTH_UP, "EPSG:32633", "uint16"), (ROTATED, "EPSG:32610", "uint8")],
    ids=["north-up-16bit", "rotated-8bit"],
)
def test_raster_output_is_georeferenced_and_equals_the_whole_image(tmp_path, transform, crs, dtype) -> None:
    values, valid = scene(200, 264, 4, dtype)
    source = write_raster(tmp_path / "scene.tif", values, transform, crs)
    predictor = Predictor(local_model(), classes=CLASSES, mean=(0.3,) * 4, std=(0.2,) * 4, tile_size=(64, 64))
    calls = []
    infer = predictor.infer
    predictor.infer = lambda x: calls.append(x.shape) or infer(x)  # type: ignore[method-assign]
    predict_raster(predictor, source, tmp_path / "out" / "scene.tif", probs_out=tmp_path / "out" / "probs.tif")
    whole = Predictor(local_model(), classes=CLASSES, mean=(0.3,) * 4, std=(0.2,) * 4)  # no tiles at all
    mask_ref, probs_ref = reference(whole, values)
    with rasterio.open(tmp_path / "out" / "scene.tif") as out, rasterio.open(source) as src:
        assert (out.crs, out.transform, out.shape, out.res) == (src.crs, src.transform, src.shape, src.res)
        assert out.nodata == 255 and out.dtypes[0] == "uint8" and out.count == 1
        assert out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and out.profile["tiled"]
        assert out.compression.name.lower() == "deflate"
        assert json.loads(out.tags()["CLASS_NAMES"]) == CLASSES["names"]
        assert [list(out.colormap(1)[i][:3]) for i in range(3)] == CLASSES["colors"]
        mask = out.read(1)
    assert (mask[~valid] == 255).all()
    np.testing.assert_array_equal(mask[valid], mask_ref[valid])
    with rasterio.open(tmp_path / "out" / "probs.tif") as probs:
        assert (probs.crs, probs.transform, probs.count, probs.nodata) == (crs, transform, 3, 255)
        stored = probs.read()
    assert (stored[:, ~valid] == 255).all()
    np.testing.assert_allclose(stored[:, valid] / PROB_SCALE, probs_ref[:, valid], atol=0.6 / PROB_SCALE)
    # Windows of 64 on the 32-pixel grid, 6 x 8 of them; those inside the nodata border are never inferred.
    rows, cols = tile_spans(200, 64, 1 / 3), tile_spans(264, 64, 1 / 3)
    with_data = [(r, c) for r in rows for c in cols if valid[r.start : r.stop, c.start : c.stop].any()]
    assert len(rows) * len(cols) == 48 and len(with_data) == 35
    assert len(calls) == len(with_data) and all(s[-2:] <= (64, 64) for s in calls)


def test_fcn_checkpoint_through_the_cli_equals_tiled_prediction_in_memory(tmp_path) -> None:
    """A real FCN (stride 32, pad 100) through `fcnseg predict`: the raster path's windows are the in-memory tiles."""
    model = create_model("fcn8s_squeezenet1_1", num_classes=3, in_channels=4).eval()
    ckpt = make_checkpoint(model, classes=CLASSES, mean=(0.05,) * 4, std=(0.03,) * 4)
    save_checkpoint(ckpt, tmp_path / "model.pt")
    values, valid = scene(230, 300, 4, "uint16", seed=1)
    write_raster(tmp_path / "a.tif", values, NORTH_UP, "EPSG:32633")
    flags = ["--tile-size", "128", "128", "--precision", "fp32", "--backend", "torch"]
    assert (
        main(["predict", str(tmp_path / "model.pt"), str(tmp_path / "a.tif"), "--out", str(tmp_path / "o"), *flags])
        == 0
    )
    tiled = Predictor.from_checkpoint(tmp_path / "model.pt", backend="torch", precision="fp32", tile_size=(128, 128))
    with rasterio.open(tmp_path / "o" / "a.tif") as out:
        mask = out.read(1)
    np.testing.assert_array_equal(mask[valid], reference(tiled, values)[0][valid])
    assert (mask[~valid] == 255).all() and not (tmp_path / "o" / "a.png").exists()


def test_openvino_runs_rasters_with_one_graph_per_window_shape(tmp_path, monkeypatch) -> None:
    """Through OpenVINO, each window shape is compiled once (blocks of one shape together), freed at the end, and
    gives the masks of the graph for any shape."""
    pytest.importorskip("openvino")
    from fcnseg.inference import raster as raster_module
    from fcnseg.inference.runtimes import _ShapeGraphs

    model = create_model("fcn8s_squeezenet1_1", num_classes=3, in_channels=4).eval()
    save_checkpoint(make_checkpoint(model, classes=CLASSES, mean=(0.05,) * 4, std=(0.03,) * 4), tmp_path / "m.pt")
    values, valid = scene(230, 300, 4, "uint16", seed=1)
    source = write_raster(tmp_path / "a.tif", values, NORTH_UP, "EPSG:32633")
    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", backend="openvino", precision="fp32", tile_size=(128, 128))
    compiled = []
    call = _ShapeGraphs.__call__

    def record(self, array):
        if array.shape != self._shape:
            compiled.append(array.shape[-2:])
        return call(self, array)

    monkeypatch.setattr(_ShapeGraphs, "__call__", record)
    predict_raster(predictor, source, tmp_path / "per_shape.tif")
    # Windows of 128 on the 32-pixel grid; those of the last row (102 rows) and column (108 columns) are shorter.
    shapes = {
        (r.stop - r.start, c.stop - c.start) for r in tile_spans(230, 128, 1 / 3) for c in tile_spans(300, 128, 1 / 3)
    }
    assert len(shapes) > 1 and sorted(compiled) == sorted(shapes)  # each shape compiled once
    assert predictor.model._shape_graphs._request is None and not predictor.model._shape_graphs.on
    monkeypatch.setattr(raster_module, "_graphs_per_shape", lambda p: contextlib.nullcontext())
    predict_raster(predictor, source, tmp_path / "any_shape.tif")
    with rasterio.open(tmp_path / "per_shape.tif") as a, rasterio.open(tmp_path / "any_shape.tif") as b:
        per_shape, any_shape = a.read(1), b.read(1)
    assert (per_shape[valid] == any_shape[valid]).mean() > 0.999 and (per_shape[~valid] == 255).all()


def test_bands_select_and_order_the_raster_bands(tmp_path) -> None:
    values, valid = scene(96, 128, 6, "uint8", seed=2)
    source = write_raster(tmp_path / "six.tif", values, NORTH_UP, "EPSG:32633")
    predictor = Predictor(local_model(), classes=CLASSES, mean=(0.3,) * 4, std=(0.2,) * 4, tile_size=(64, 64))
    predict_raster(predictor, source, tmp_path / "m.tif", indexes=[4, 3, 2, 6])
    with rasterio.open(tmp_path / "m.tif") as out:
        mask = out.read(1)
    expected = reference(predictor, values[[3, 2, 1, 5]])[0]
    np.testing.assert_array_equal(mask[valid], expected[valid])
    with pytest.raises(DataError, match=r"six.tif: 6 bands, but the model takes 4.*--bands"):
        predict_raster(predictor, source, tmp_path / "x.tif")
    with pytest.raises(DataError, match=r"--bands 4 3 2 9 out of range: the raster has 6"):
        predict_raster(predictor, source, tmp_path / "x.tif", indexes=[4, 3, 2, 9])
    with pytest.raises(DataError, match=r"selects 3 band\(s\), but the model takes 4"):
        predict_raster(predictor, source, tmp_path / "x.tif", indexes=[4, 3, 2])


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def test_bad_rasters_get_one_line(tmp_path, capsys) -> None:
    model = create_model("fcn8s_squeezenet1_1", num_classes=3, in_channels=4).eval()
    save_checkpoint(make_checkpoint(model, classes=CLASSES, mean=(0.05,) * 4, std=(0.03,) * 4), tmp_path / "m.pt")
    values, _ = scene(96, 128, 4, "uint16")
    write_raster(tmp_path / "nocrs.tif", values, NORTH_UP, None)
    good = write_raster(tmp_path / "good.tif", values, NORTH_UP, "EPSG:32633")
    (tmp_path / "cut.tif").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    write_raster(tmp_path / "three.tif", values[:3], NORTH_UP, "EPSG:32633")
    base = ["predict", str(tmp_path / "m.pt"), "--out", str(tmp_path / "o"), "--backend", "torch"]
    assert "no coordinate reference system" in _one_line_error(capsys, [*base, str(tmp_path / "nocrs.tif")])
    assert "cut.tif" in _one_line_error(capsys, [*base, str(tmp_path / "cut.tif")])
    assert "3 bands, but the model takes 4" in _one_line_error(capsys, [*base, str(tmp_path / "three.tif")])
    assert "--bands applies to georeferenced rasters" in _one_line_error(
        capsys, [*base, str(tmp_path / "x.png"), "--bands", "1", "2", "3", "4"]
    )


def test_plain_tiffs_keep_the_image_path(tmp_path) -> None:
    """A TIFF without GeoTIFF tags is an image: a PNG mask comes out, as before."""
    values, _ = scene(64, 80, 4, "uint16")
    tifffile.imwrite(tmp_path / "photo.tif", np.moveaxis(values, 0, -1))
    model = create_model("fcn8s_squeezenet1_1", num_classes=3, in_channels=4).eval()
    save_checkpoint(make_checkpoint(model, classes=CLASSES, mean=(0.05,) * 4, std=(0.03,) * 4), tmp_path / "m.pt")
    argv = ["predict", str(tmp_path / "m.pt"), str(tmp_path / "photo.tif"), "--out", str(tmp_path / "o")]
    assert main([*argv, "--backend", "torch"]) == 0
    assert (tmp_path / "o" / "photo.png").is_file() and not (tmp_path / "o" / "photo.tif").exists()


@pytest.mark.parametrize("transform", [NORTH_UP, ROTATED], ids=["north-up", "rotated"])
def test_polygons_rasterize_back_to_the_mask(tmp_path, transform) -> None:
    pyogrio = pytest.importorskip("pyogrio.raw")
    shapely = pytest.importorskip("shapely")
    from rasterio.features import rasterize

    values, _ = scene(96, 128, 4, "uint8", seed=3)
    source = write_raster(tmp_path / "s.tif", values, transform, "EPSG:32633")
    predictor = Predictor(local_model(), classes=CLASSES, mean=(0.5,) * 4, std=(0.1,) * 4, tile_size=(64, 64))
    predict_raster(predictor, source, tmp_path / "m.tif")
    with rasterio.open(tmp_path / "m.tif") as ds:
        mask = ds.read(1)
    assert len(np.unique(mask)) == 4  # three classes and nodata
    found = {}
    for name, options in (
        ("exact.gpkg", {}),
        ("big.geojson", {"min_area": 500.0}),
        ("simple.gpkg", {"tolerance": 7.0}),
    ):
        count = write_polygons(tmp_path / "m.tif", tmp_path / name, **options)
        meta, _, geometry, (labels, names) = pyogrio.read(tmp_path / name)
        assert len(geometry) == count and rasterio.crs.CRS.from_user_input(meta["crs"]) == "EPSG:32633"
        assert [CLASSES["names"][c] for c in labels] == list(names)
        found[name] = (shapely.from_wkb(geometry), labels)
    polygons, labels = found["exact.gpkg"]
    back = rasterize(zip(polygons, labels, strict=True), out_shape=mask.shape, transform=transform, fill=255)
    np.testing.assert_array_equal(back, mask)
    big, _ = found["big.geojson"]
    assert 0 < len(big) < len(polygons) and min(p.area for p in big) >= 500.0
    assert sum(p.area >= 500.0 for p in polygons) == len(big)
    simple, _ = found["simple.gpkg"]
    assert len(simple) == len(polygons)
    assert sum(shapely.get_num_coordinates(simple)) < sum(shapely.get_num_coordinates(polygons))
    assert max(shapely.hausdorff_distance(polygons, simple)) <= 7.0 + 1e-6


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_bulk_prediction_under_torchrun_equals_one_process_and_resumes(tmp_path) -> None:
    """Two processes each take a disjoint share; the union equals one process's outputs, file for file."""
    from test_distributed import torchrun
    from test_inference_predictor import smooth_image

    model = create_model("fcn8s_squeezenet1_1", num_classes=3, in_channels=3).eval()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    save_checkpoint(make_checkpoint(model, classes=CLASSES, mean=mean, std=std), tmp_path / "m.pt")
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    for i in range(3):
        tifffile.imwrite(inputs / f"photo{i}.tif", smooth_image(40 + 8 * i, 56, seed=i))  # plain TIFFs: images
    for i in range(2):
        values, _ = scene(96, 112 + 16 * i, 3, "uint8", seed=i)
        write_raster(inputs / "sub" / f"r{i}.tif", values, NORTH_UP, "EPSG:32633")
    flags = [str(tmp_path / "m.pt"), str(inputs), "--backend", "torch", "--device", "cpu", "--precision", "fp32"]
    flags += ["--tile-size", "64", "64", "--vector", "geojson"]
    result = torchrun(["-m", "fcnseg", "predict", *flags, "--out", str(tmp_path / "two")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert main(["predict", *flags, "--out", str(tmp_path / "one")]) == 0
    one, two = _tree(tmp_path / "one"), _tree(tmp_path / "two")
    assert sorted(one) == sorted(two) and len(one) == 1 + 3 * 2 + 2 * 2  # legend, png + overlay, tif + geojson
    assert [name for name in one if one[name] != two[name]] == []
    # Resume: the outputs of one input are gone; only they are written again.
    (tmp_path / "two" / "sub" / "r1.geojson").unlink()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "two").rglob("*") if p.is_file()}
    assert main(["predict", *flags, "--out", str(tmp_path / "two"), "--skip-existing"]) == 0
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "two").rglob("*") if p.is_file()}
    changed = sorted(str(p.relative_to(tmp_path / "two")) for p in after if after[p] != before.get(p))
    assert changed == ["legend.png", "sub/r1.geojson", "sub/r1.tif"]
    assert _tree(tmp_path / "two") == two


def test_training_windows_are_read_from_disk_with_nodata_void(tmp_path, monkeypatch) -> None:
    from fcnseg.data.raster import RasterReader
    from fcnseg.data.raster_windows import RasterWindows

    values, valid = scene(150, 190, 4, "uint16", seed=4)
    labels = (np.arange(190)[None, :] // 64 + np.zeros((150, 1), int)).astype(np.uint8)  # classes 0, 1, 2
    labels[5:9, 100:120] = 255  # void in the mask itself
    image = write_raster(tmp_path / "img.tif", values, NORTH_UP, "EPSG:32633")
    mask = write_raster(tmp_path / "mask.tif", labels[None], NORTH_UP, "EPSG:32633", nodata=None)
    reads = []
    read = RasterReader.read
    monkeypatch.setattr(RasterReader, "read", lambda self, w: reads.append(w) or read(self, w))
    data = RasterWindows([(image, mask)], (48, 64), samples=6, bands=4)
    assert len(data) == 6
    for i in range(6):
        x, y = data[i]
        _, (top, left, bottom, right) = data.window(i)
        assert x.shape == (4, 48, 64) and y.shape == (48, 64) and y.dtype == torch.int64
        np.testing.assert_allclose(x.numpy(), values[:, top:bottom, left:right] / 65535.0, rtol=1e-6)
        expected = np.where(valid[top:bottom, left:right], labels[top:bottom, left:right], 255)
        np.testing.assert_array_equal(y.numpy(), expected)
    assert reads == [data.window(i)[1] for i in range(6)]  # one window per sample, never the whole raster
    assert len({data.window(i)[1] for i in range(6)}) > 1
    # Pairs off the same grid: one line naming both files.
    for name, kwargs in (("crs", {"crs": "EPSG:32634"}), ("transform", {"transform": ROTATED})):
        other = write_raster(
            tmp_path / f"{name}.tif", labels[None], **({"transform": NORTH_UP, "crs": "EPSG:32633"} | kwargs)
        )
        with pytest.raises(DataError, match=rf"img.tif and .*{name}.tif differ in {'CRS' if name == 'crs' else name}"):
            RasterWindows([(image, other)], (48, 64), samples=1, bands=4)
    small = write_raster(tmp_path / "small.tif", labels[None, :100], NORTH_UP, "EPSG:32633")
    with pytest.raises(DataError, match=r"differ in size \(190x150 vs 190x100\)"):
        RasterWindows([(image, small)], (48, 64), samples=1, bands=4)


def test_without_rasterio_a_raster_is_one_line_naming_the_extra(tmp_path, monkeypatch) -> None:
    from fcnseg.data.raster import RasterReader

    values, _ = scene(64, 64, 4, "uint8")
    source = write_raster(tmp_path / "s.tif", values, NORTH_UP, "EPSG:32633")
    monkeypatch.setitem(sys.modules, "rasterio", None)  # `import rasterio` raises ImportError
    with pytest.raises(
        DataError, match=r"^reading georeferenced rasters needs rasterio, .*: pip install 'fcnseg\[geo\]'$"
    ):
        RasterReader(source, 4)


def _raster_dataset(root: Path, stems: dict[str, int], mask_transform: Affine = NORTH_UP) -> Path:
    """A folder dataset of 4-band uint16 GeoTIFFs (nodata border and holes) and class-index mask GeoTIFFs."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem, seed in stems.items():
        values, valid = scene(160, 200, 4, "uint16", seed=seed)
        labels = np.where(values[2] > 2500, 2, np.where(values[0] > values[1], 1, 0))  # classes 0..2 from the bands
        labels[~valid] = 0  # under the image's nodata: the mask says background, training must see void
        write_raster(root / "images" / f"{stem}.tif", values, NORTH_UP, "EPSG:32633")
        write_raster(root / "masks" / f"{stem}.tif", labels[None].astype(np.uint8), mask_transform, "EPSG:32633", None)
    return root


def _train_argv(root: Path, out: Path) -> list[str]:
    """`fcnseg train` on a raster folder dataset: a tiny FCN, 5 steps of 2 windows of 64 x 96, on the CPU."""
    argv = ["train", "--model", "fcn8s_squeezenet1_1", "--dataset", "folder", "--data-root", str(root)]
    argv += ["--num-classes", "3", "--out", str(out), "--iters", "5", "--batch-size", "2", "--crop-size", "64", "96"]
    return [*argv, "--val-every", "5", "--log-every", "1", "--workers", "0", "--device", "cpu", "--precision", "fp32"]


def test_train_command_samples_raster_windows_from_disk(tmp_path, monkeypatch) -> None:
    """`fcnseg train --dataset folder` on GeoTIFF pairs: random windows read from disk, validation on a grid."""
    from fcnseg.data import dataset as photo_dataset
    from fcnseg.data.raster_windows import RasterGrid
    from fcnseg.training import loop

    root = _raster_dataset(tmp_path / "geo", {"a": 0, "b": 1, "c": 2})
    (root / "train.txt").write_text("a\nb\n")
    (root / "val.txt").write_text("c\n")

    def whole(path, *args, **kwargs):
        raise AssertionError(f"{path} decoded whole")

    monkeypatch.setattr(photo_dataset, "read_image", whole)  # the photo path is never taken for rasters
    trainers = []
    init = loop.Trainer.__init__
    monkeypatch.setattr(loop.Trainer, "__init__", lambda self, *a, **k: init(self, *a, **k) or trainers.append(self))
    out = tmp_path / "run"
    assert main(_train_argv(root, out)) == 0
    windows, val = trainers[0].train_set.base, trainers[0].val_set
    # An epoch covers the two training rasters' area once: ceil(2 x 160 x 200 / (64 x 96)) windows of the crop size.
    assert len(windows) == 11 and windows.size == (64, 96)
    assert isinstance(val, RasterGrid) and val.windows == [(0, (0, 0, 160, 200))]  # smaller than a 1024 window
    image, mask = trainers[0].train_set[(1, 3)][:2]  # sample 3 of epoch 1, augmented
    assert image.shape == (4, 64, 96) and windows.epoch == 1
    _, raw = windows.load(3)
    pair, (top, left, bottom, right) = windows.window(3)
    nodata = ~scene(160, 200, 4, "uint16", seed=pair)[1][top:bottom, left:right]
    assert nodata.any() and (raw.numpy() == 255).tolist() == nodata.tolist()  # image nodata is void
    assert torch.equal(mask, raw) or torch.equal(mask, raw.flip(-1))  # flipped or not, never scaled
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 5 and all(np.isfinite(losses))
    assert 0 <= [r for r in rows if "val_mean_iou" in r][-1]["val_mean_iou"] <= 1
    assert (out / "last.pt").stat().st_size > 0 and (out / "best.pt").stat().st_size > 0
    # `fcnseg eval` reads the rasters on the same grid of windows: the run's own validation score, from disk.
    argv = ["eval", str(out / "best.pt"), "--backend", "torch", "--precision", "fp32", "--device", "cpu"]
    assert main([*argv, "--json", str(tmp_path / "m.json"), "--no-progress"]) == 0
    scored = json.loads((tmp_path / "m.json").read_text())
    assert scored["mean_iou"] == pytest.approx([r for r in rows if "val_mean_iou" in r][-1]["val_mean_iou"], abs=1e-6)


def test_train_command_stops_on_raster_pairs_off_the_grid(tmp_path, capsys) -> None:
    """A mask on another grid than its image stops `fcnseg train` before the first step, in one line naming both."""
    from PIL import Image

    from fcnseg.data.raster_windows import raster_files

    shifted = _raster_dataset(tmp_path / "shifted", {"a": 0}, mask_transform=NORTH_UP @ Affine.translation(3, 0))
    out = tmp_path / "run"
    err = _one_line_error(capsys, [*_train_argv(shifted, out), "--train-split", "all", "--val-split", ""])
    assert f"{shifted}/images/a.tif and {shifted}/masks/a.tif differ in transform" in err
    assert "(10, 0, 500000, 0, -10, 4200000) vs (10, 0, 500030, 0, -10, 4200000)" in err
    assert not (out / "last.pt").exists() and not (out / "metrics.jsonl").exists()
    # A folder of rasters and photos together: one line naming one of each.
    photo = shifted / "images" / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    with pytest.raises(DataError, match=r"a\.tif is a georeferenced raster but .*photo\.png is not"):
        raster_files([(shifted / "images" / "a.tif", shifted / "masks" / "a.tif"), (photo, photo)])


def test_check_data_reads_raster_pairs_by_windows_and_skips_nodata(tmp_path, monkeypatch) -> None:
    """`check-data` (and with it `--class-weights`) on GeoTIFF pairs: windows read from disk, class counts and
    per-band statistics over the data pixels only, a pair off its grid reported by name while the others count."""
    from functools import partial

    from fcnseg.data import checks
    from fcnseg.data import dataset as photo_dataset

    root = _raster_dataset(tmp_path / "geo", {"a": 0, "b": 1})
    off = _raster_dataset(tmp_path / "off", {"c": 2}, mask_transform=NORTH_UP @ Affine.translation(3, 0))
    for kind in ("images", "masks"):
        (off / kind / "c.tif").rename(root / kind / "c.tif")

    def whole(path, *args, **kwargs):
        raise AssertionError(f"{path} decoded whole")

    monkeypatch.setattr(photo_dataset, "read_image", whole)
    monkeypatch.setattr(checks, "raster_validation_grid", partial(checks.raster_validation_grid, size=(64, 96)))
    report = checks.check_dataset("folder", root, ["all"], progress=False, num_classes=3)
    split = report.splits["all"]
    assert split.num_items == 3 and split.num_ok == 2
    assert [(p.file, "differ in transform" in p.message) for p in report.problems] == [
        (str(root / "masks/c.tif"), True)
    ]
    values = [scene(160, 200, 4, "uint16", seed=seed) for seed in (0, 1)]
    data = np.concatenate([v[:, ok] for v, ok in values], axis=1) / 65535.0  # (4, data pixels): nodata left out
    labels = np.concatenate(
        [np.where(v[2] > 2500, 2, np.where(v[0] > v[1], 1, 0))[ok] for v, ok in values]
    )  # the masks' classes under data pixels; nodata pixels are void
    assert split.counts.pixels.tolist() == np.bincount(labels, minlength=3).tolist()
    mean, std = report.normalization()
    assert list(mean) == pytest.approx(data.mean(1).tolist(), rel=1e-6)  # float32 decoding
    assert list(std) == pytest.approx(data.std(1).tolist(), rel=1e-5)
    assert split.sizes == {(160, 200): 2}
