"""``fcnseg eval`` scores what ``fcnseg predict`` produces: the same masks, hence the same metrics.

The model is conftest's short CamVid run (a trained FCN-8s SqueezeNet, whose close decisions flip between inference
paths that differ, e.g. packed bf16 convolutions against plain autocast). A folder dataset holds real CamVid
validation images, one of them cropped to another size and one saved as JPEG; ``fcnseg eval`` writes the confusion
matrix, and the test recounts it from the palette masks that ``fcnseg predict`` wrote for the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CAMVID, require
from PIL import Image

from fcnseg.cli.main import main

K = 11
VOID = 11  # CamVid's "Unlabelled"


@pytest.fixture(scope="module")
def folder_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval_is_predict")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    stems = sorted(p.stem for p in require(CAMVID / "val").glob("*.png"))[::25][:4]
    for i, stem in enumerate(stems):
        image = Image.open(CAMVID / "val" / f"{stem}.png").convert("RGB")
        label = Image.open(CAMVID / "valannot" / f"{stem}.png")
        if i == 1:  # another size, not a multiple of the network's stride
            image, label = image.crop((7, 11, 7 + 413, 11 + 298)), label.crop((7, 11, 7 + 413, 11 + 298))
        image.save(root / "images" / (f"{stem}.jpg" if i == 2 else f"{stem}.png"))
        label.save(root / "masks" / f"{stem}.png")
    return root


def recount(pred_dir: Path, root: Path) -> np.ndarray:
    """The confusion matrix (rows ground truth, columns prediction) of the predicted masks, void ignored."""
    matrix = np.zeros((K, K), dtype=np.int64)
    for mask_path in sorted((root / "masks").glob("*.png")):
        gt = np.asarray(Image.open(mask_path)).astype(np.int64)
        with Image.open(pred_dir / mask_path.name) as pred_png:
            assert pred_png.size == (gt.shape[1], gt.shape[0])
            pred = np.asarray(pred_png).astype(np.int64)
        keep = gt != VOID
        matrix += np.bincount(gt[keep] * K + pred[keep], minlength=K * K).reshape(K, K)
    return matrix


@pytest.mark.parametrize(
    "options",
    [[], ["--tile-size", "160", "224", "--flip"]],
    ids=["defaults", "tiled-flip"],
)
def test_eval_metrics_are_those_of_predict_masks(camvid_run, folder_split: Path, tmp_path: Path, options) -> None:
    checkpoint = camvid_run[0] / "best.pt"
    report = tmp_path / "metrics.json"
    dataset = ["--dataset", "folder", "--data-root", str(folder_split), "--num-classes", str(K)]
    assert main(["eval", str(checkpoint), *dataset, "--void-index", str(VOID), "--split", "all", "--json",
                 str(report), "--workers", "0", "--no-progress", *options]) == 0  # fmt: skip
    predicted = tmp_path / "pred"
    assert main(["predict", str(checkpoint), str(folder_split / "images"), "--out", str(predicted), *options]) == 0
    metrics = json.loads(report.read_text())
    expected = recount(predicted, folder_split)
    assert metrics["num_images"] == 4
    assert expected.sum() > 4 * 250 * 350  # labelled pixels were counted, not an empty comparison
    np.testing.assert_array_equal(np.asarray(metrics["confusion"]), expected)
    # The defaults of both commands run the same precision (bf16 where the CPU has it, as the report says).
    assert metrics["settings"]["precision"] == "auto"
