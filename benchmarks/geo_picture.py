"""A picture of `fcnseg predict`'s georeferenced output opened over its input (docs/images/geo_overlay.png).

Everything in the picture is output of the code, nothing is drawn by hand:

1. two synthetic land-cover scenes are written as 3-band uint8 GeoTIFFs in UTM zone 33N (10 m pixels) with a nodata
   border, each with its mask GeoTIFF of four classes (water, forest, fields, built-up) on the same grid;
2. ``fcnseg train --dataset folder`` trains FCN-8s SqueezeNet 1.1 on random windows of the first scene read from disk
   (docs/geo.md, "Training on rasters"), ImageNet features from ``--backbone-weights`` when given;
3. ``fcnseg predict`` segments the second scene, which training never saw, into a COG;
4. the input and the COG are read back with rasterio and drawn side by side on their map coordinates (eastings and
   northings from the transform): the input alone, and the input under the mask in the COG's own colour table
   (nodata left clear), with the class names from its ``CLASS_NAMES`` tag and the pixel accuracy against the scene's
   labels.

    python benchmarks/geo_picture.py --backbone-weights ../shared/weights/squeezenet1_1-imagenet-features.pth
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import torch
from PIL import Image
from rasterio.transform import Affine

from fcnseg.cli.main import main as fcnseg

CLASSES = (("water", (40, 90, 200)), ("forest", (20, 110, 40)), ("fields", (230, 200, 80)), ("built-up", (200, 60, 60)))
# Mean ground colour of each class in the generated imagery (what a satellite's RGB bands roughly show).
GROUND = np.array([(38, 62, 92), (46, 78, 44), (150, 140, 90), (140, 132, 128)], dtype=np.float32)
NODATA_BORDER = 48  # pixels of nodata along the top and left edges
CRS = "EPSG:32633"


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """``(H, W)`` smooth noise in about ``[0, 1]``: uniform values on a ``cell``-pixel lattice, bilinearly upsampled."""
    coarse = torch.from_numpy(rng.random((1, 1, height // cell + 2, width // cell + 2), dtype=np.float32))
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic")[0, 0].numpy()


def land_cover(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``(H, W)`` uint8 classes: water in low ground, forest on a second field, a town with a road grid, fields."""
    ground, woods = smooth_noise(rng, height, width, 160), smooth_noise(rng, height, width, 90)
    labels = np.full((height, width), 2, dtype=np.uint8)  # fields
    labels[woods > 0.62] = 1
    y, x = np.mgrid[:height, :width]
    cy, cx = rng.integers(height // 4, 3 * height // 4), rng.integers(width // 4, 3 * width // 4)
    town = (y - cy) ** 2 + (x - cx) ** 2 < (min(height, width) // 5) ** 2 + 4000 * smooth_noise(rng, height, width, 40)
    roads = ((y % 96) < 4) | ((x % 128) < 4)
    labels[town | (roads & (woods < 0.55))] = 3
    labels[ground < 0.28] = 0
    return labels


def imagery(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` uint8 RGB: each class's ground colour, field parcels, roofs and tree crowns, sensor noise."""
    height, width = labels.shape
    rgb = GROUND[labels].transpose(2, 0, 1).copy()
    parcels = smooth_noise(rng, height, width, 24)
    rgb[:, labels == 2] *= (0.75 + 0.5 * np.round(parcels * 4) / 4)[labels == 2]
    y, x = np.mgrid[:height, :width]
    roofs = ((y % 14) < 9) & ((x % 18) < 12)  # blocks of houses between lanes
    rgb[:, labels == 3] *= np.where(roofs, 1.15, 0.7)[labels == 3]
    rgb[:, labels == 1] *= (0.8 + 0.4 * smooth_noise(rng, height, width, 6))[labels == 1]  # tree crowns
    rgb += rng.normal(0, 9, rgb.shape).astype(np.float32)
    return rgb.clip(1, 255).astype(np.uint8)  # 0 is nodata


def write_scene(folder: Path, stem: str, seed: int, size: tuple[int, int], origin: tuple[float, float]) -> None:
    """``images/<stem>.tif`` and ``masks/<stem>.tif`` of one scene, with the nodata border in both."""
    rng = np.random.default_rng(seed)
    labels = land_cover(rng, *size)
    image = imagery(rng, labels)
    image[:, :NODATA_BORDER], image[:, :, :NODATA_BORDER] = 0, 0
    labels[:NODATA_BORDER], labels[:, :NODATA_BORDER] = 255, 255
    profile = {"driver": "GTiff", "height": size[0], "width": size[1], "crs": CRS, "tiled": True}
    profile |= {"transform": Affine(10.0, 0, origin[0], 0, -10.0, origin[1]), "blockxsize": 256, "blockysize": 256}
    for sub, values, nodata in (("images", image, 0), ("masks", labels[None], 255)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        with rasterio.open(folder / sub / f"{stem}.tif", "w", count=len(values), dtype="uint8", nodata=nodata,
                           **profile) as ds:  # fmt: skip
            ds.write(values)


def train_and_predict(work: Path, args: argparse.Namespace) -> Path:
    """Train on scene ``a`` through ``fcnseg train``, predict scene ``b`` through ``fcnseg predict``; the COG path."""
    data = work / "data"
    write_scene(data, "a", seed=1, size=(768, 1024), origin=(402_000.0, 5_010_000.0))
    write_scene(data, "b", seed=2, size=(768, 1024), origin=(420_000.0, 5_010_000.0))
    (data / "classes.txt").write_text("".join(f"{name} {r} {g} {b}\n" for name, (r, g, b) in CLASSES))
    (data / "train.txt").write_text("a\n")
    (data / "val.txt").write_text("b\n")
    train = ["train", "--model", "fcn8s_squeezenet1_1", "--dataset", "folder", "--data-root", str(data)]
    train += ["--classes", str(data / "classes.txt"), "--out", str(work / "run"), "--crop-size", "192", "192"]
    train += ["--iters", str(args.iters), "--batch-size", "4", "--lr", "1e-3", "--val-every", str(args.iters)]
    train += ["--workers", "0", "--seed", "0"]
    if args.backbone_weights:
        train += ["--backbone-weights", str(args.backbone_weights)]
    if fcnseg(train) != 0:
        raise SystemExit("fcnseg train failed")
    if fcnseg(["predict", str(work / "run" / "best.pt"), str(data / "images" / "b.tif"), "--out", str(work)]) != 0:
        raise SystemExit("fcnseg predict failed")
    return work / "b.tif"


def render(image_path: Path, mask_path: Path, truth_path: Path, out: Path) -> None:
    """The input and the input under the predicted mask, side by side on their map coordinates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    with rasterio.open(image_path) as src, rasterio.open(mask_path) as pred, rasterio.open(truth_path) as gt:
        rgb, mask, truth = np.moveaxis(src.read(), 0, -1), pred.read(1), gt.read(1)
        colors, names = pred.colormap(1), json.loads(pred.tags()["CLASS_NAMES"])
        bounds, crs, nodata = src.bounds, src.crs, pred.nodata
    labelled = truth != 255
    accuracy = float((mask[labelled] == truth[labelled]).mean())
    shown = np.zeros((*mask.shape, 4), dtype=np.float32)
    for index in range(len(names)):
        shown[mask == index] = [*(np.array(colors[index][:3]) / 255), 0.55]
    shown[mask == nodata] = 0  # nodata: no class, the input shows through
    extent = (bounds.left / 1000, bounds.right / 1000, bounds.bottom / 1000, bounds.top / 1000)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True, layout="constrained")
    for ax, title in zip(axes, ("input GeoTIFF (RGB, nodata border)", "fcnseg predict COG over its input"),
                         strict=True):  # fmt: skip
        ax.imshow(rgb, extent=extent, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"easting (km, {crs})")
    axes[1].imshow(shown, extent=extent, interpolation="nearest")
    axes[0].set_ylabel("northing (km)")
    handles = [Patch(color=np.array(colors[i][:3]) / 255, label=name) for i, name in enumerate(names)]
    axes[1].legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.85)
    fig.suptitle(f"held-out scene, pixel accuracy {100 * accuracy:.1f}% against its labels (nodata excluded)",
                 fontsize=10)  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    with Image.open(buffer) as picture:  # 256 colours: a third of the bytes of the RGBA figure
        picture.convert("RGB").quantize(256).save(out, optimize=True)
    print(f"{out}: {out.stat().st_size / 1024:.0f} KiB, pixel accuracy {100 * accuracy:.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/images/geo_overlay.png"), help="the picture")
    parser.add_argument("--iters", type=int, default=120, help="training steps (batches of 4 windows of 192)")
    parser.add_argument("--backbone-weights", type=Path, help="ImageNet SqueezeNet 1.1 features (a state dict)")
    parser.add_argument("--work", type=Path, help="folder for the scenes, the run and the COG (default: temporary)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="geo-picture-"))
    mask = train_and_predict(work, args)
    data = work / "data"
    render(data / "images" / "b.tif", mask, data / "masks" / "b.tif", args.out)


if __name__ == "__main__":
    main()
