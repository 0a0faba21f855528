"""The inference engine: whole, tiled, multi-scale, flip and mixed precision; the memory-based tile chooser."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.inference.engine import autocast_dtype, choose_tile_size, segment_logits, tile_starts, tile_weight
from fcnseg.inference.memory import MemoryModel, estimate_memory, measure_peak_bytes

K = 5


class LocalNet(nn.Module):
    """Stride-1 net with a 7-pixel receptive field: tiling changes only pixels within 3 px of a window edge."""

    def __init__(self, num_classes: int = K) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, num_classes, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class StridedNet(nn.Module):
    """Stand-in FCN: stride-4 features, a 1x1 score layer, bilinear upsampling to the input size."""

    def __init__(self, num_classes: int = K) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.score = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.score(self.body(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(0)
    # Smooth random images (upsampled noise), closer to natural images than white noise.
    return F.interpolate(torch.randn(2, 3, 19, 27), size=(150, 211), mode="bilinear", align_corners=False)


def seeded(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(1)
    return cls().eval()


@pytest.mark.parametrize(("size", "tile", "overlap"), [(10, 4, 0.5), (211, 64, 1 / 3), (150, 96, 0.25), (50, 64, 0.3)])
def test_tile_starts_cover_exactly(size: int, tile: int, overlap: float) -> None:
    starts = tile_starts(size, tile, overlap)
    covered = torch.zeros(size, dtype=torch.bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()
    assert starts[0] == 0 and starts[-1] == max(0, size - tile)  # last window flush with the border
    assert starts == sorted(set(starts))


def test_tile_weight_is_positive_and_peaks_at_centre() -> None:
    w = tile_weight(7, 10)
    assert w.shape == (7, 10) and (w > 0).all()
    assert w[3, 4:6].max() == w.max() and w[0, 0] == w.min()


def test_whole_image_shape_and_dtype(images: torch.Tensor) -> None:
    out = segment_logits(seeded(StridedNet), images)
    assert out.shape == (2, K, 150, 211) and out.dtype == torch.float32
    assert not torch.is_inference(images)  # the input is untouched


@pytest.mark.parametrize("tile", [(64, 64), (96, 128), (200, 80)])
def test_tiled_agrees_with_whole_image(images: torch.Tensor, tile: tuple[int, int]) -> None:
    model = seeded(LocalNet)
    whole = segment_logits(model, images)
    tiled = segment_logits(model, images, tile_size=tile)
    agreement = (whole.argmax(1) == tiled.argmax(1)).float().mean().item()
    assert agreement >= 0.999, f"tiled/whole argmax agreement {agreement:.5f}"
    # Pixels farther than the receptive-field radius from every window edge are exact.
    torch.testing.assert_close(tiled[..., 70:80, 100:110], whole[..., 70:80, 100:110], atol=0.15, rtol=0)


def test_tile_larger_than_image_is_whole(images: torch.Tensor) -> None:
    model = seeded(StridedNet)
    torch.testing.assert_close(segment_logits(model, images, tile_size=(512, 512)), segment_logits(model, images))


def test_flip_and_scales(images: torch.Tensor) -> None:
    model = seeded(StridedNet)
    plain = segment_logits(model, images)
    mirrored = segment_logits(model, images.flip(-1)).flip(-1)
    torch.testing.assert_close(segment_logits(model, images, flip=True), (plain + mirrored) / 2)
    multi = segment_logits(model, images, scales=(0.5, 1.0, 1.5), flip=True, tile_size=(64, 64))
    assert multi.shape == plain.shape and torch.isfinite(multi).all()
    half = F.interpolate(
        segment_logits(model, F.interpolate(images, size=(75, 106), mode="bilinear")),
        size=(150, 211),
        mode="bilinear",
    )
    torch.testing.assert_close(segment_logits(model, images, scales=(0.5, 1.0)), (half + plain) / 2)


@pytest.mark.parametrize("precision", ["bf16", "auto"])
def test_reduced_precision_agrees_with_fp32(images: torch.Tensor, precision: str) -> None:
    model = seeded(StridedNet)
    ref = segment_logits(model, images, precision="fp32")
    out = segment_logits(model, images, precision=precision)
    assert out.dtype == torch.float32
    assert (ref.argmax(1) == out.argmax(1)).float().mean() >= 0.99


def test_precision_is_validated(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="precision"):
        segment_logits(seeded(StridedNet), images, precision="int8")
    assert autocast_dtype("fp32", "cpu") is None
    assert autocast_dtype("fp16", "cpu") is torch.float16
    assert autocast_dtype("auto", "cpu") in (None, torch.bfloat16)


def test_memory_probe_scales_with_area() -> None:
    model = seeded(StridedNet)
    small, large = measure_peak_bytes(model, 64, 64), measure_peak_bytes(model, 128, 128)
    # The largest live set is the stride-2 feature map and its successor: at least 8 channels of H/2 x W/2 fp32.
    assert small >= 8 * 32 * 32 * 4
    assert large == pytest.approx(4 * small, rel=0.05)
    mem = estimate_memory(model)
    assert mem.peak_bytes(128, 128) >= large


def test_choose_tile_size_from_budget() -> None:
    mem = MemoryModel(bytes_per_pixel=1000.0, pad=0.0)
    assert choose_tile_size(mem, (300, 400), 300 * 400 * 1000) is None  # fits whole
    tile = choose_tile_size(mem, (1000, 1500), 256 * 256 * 1000)
    assert tile == (256, 256)
    assert mem.peak_bytes(*tile) <= 256 * 256 * 1000
    assert choose_tile_size(mem, (100, 5000), 100 * 1000 * 1000) == (100, 992)  # thin image: use its full height
    assert choose_tile_size(500.0, (1000, 1500), 2 * 256 * 256 * 1000, batch_size=4) == (256, 256)
    assert choose_tile_size(mem, (1000, 1000), 10) == (64, 64)  # the floor, with a warning
    padded = MemoryModel(bytes_per_pixel=1000.0, pad=100.0)
    th, tw = choose_tile_size(padded, (2000, 2000), 456 * 456 * 1000)
    assert (th, tw) == (352, 352) and padded.peak_bytes(th, tw) <= 456 * 456 * 1000


def test_choose_tile_size_probes_a_model() -> None:
    model = seeded(StridedNet)
    per_image = estimate_memory(model).peak_bytes(160, 160)
    tile = choose_tile_size(model, (480, 640), per_image)
    assert tile is not None and max(tile) <= 160 + 32
    assert choose_tile_size(model, (100, 100), per_image) is None
