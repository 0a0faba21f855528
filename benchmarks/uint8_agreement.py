"""How far ``fcnseg predict``'s masks through OpenVINO move from ``fcnseg eval``'s: uint8 images normalised in graph.

Run as ``.venv/bin/python benchmarks/uint8_agreement.py --checkpoint runs/camvid/best.pt [--images DIR]``.
``Predictor.predict`` hands OpenVINO the decoded uint8 image and a graph that normalises it and takes the argmax
(``RuntimeModel.image_labels``); ``fcnseg eval`` scores images that PyTorch normalised (``Predictor.infer``). Both
run the same OpenVINO network in the same precision; the graph may fold the normalisation into the first
convolution, so rounding moves. Prints the share of pixels with the same class over every PNG of ``--images``
(CamVid test by default), and the worst image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fcnseg.core.machine import processor_line
from fcnseg.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
CAMVID_TEST = ROOT.parent / "shared" / "data" / "camvid" / "test"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--images", type=Path, default=CAMVID_TEST)
    parser.add_argument("--precision", default="auto", help="auto (bf16 where native), fp32 or bf16")
    args = parser.parse_args()
    print(f"processor: {processor_line()}")
    # Scale 1 whatever the checkpoint records: at other scales predict takes the float path, and the two would agree
    # trivially.
    predictor = Predictor.from_checkpoint(args.checkpoint, backend="openvino", precision=args.precision, scales=(1.0,))
    same = total = 0
    worst = (float("inf"), "")
    for path in sorted(args.images.glob("*.png")):
        image = predictor.load(path)
        masks = predictor.predict(image)  # the uint8 graph
        reference = predictor.logits([image])[0].argmax(0).numpy()  # normalised by PyTorch, as eval scores
        agree = int((masks == reference).sum())
        same, total = same + agree, total + reference.size
        worst = min(worst, (agree / reference.size, path.name))
    print(f"{predictor.backend} ({predictor.computes_in}): {100 * same / total:.4f} % of {total} pixels agree; "
          f"worst image {worst[1]}: {100 * worst[0]:.3f} %")  # fmt: skip


if __name__ == "__main__":
    main()
