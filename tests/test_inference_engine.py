"""The inference engine: whole, tiled (window placement, banded blending), multi-scale, flip and mixed precision;
the memory-based tile chooser."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import cpu_native_bf16
from torch import nn

from fcnseg.inference import engine
from fcnseg.inference.engine import choose_tile_size, class_indices, segment_bands, segment_logits
from fcnseg.inference.memory import MemoryModel, estimate_memory, measure_peak_bytes
from fcnseg.inference.tiling import Span, tile_spans

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


class StandInFCN(nn.Module):
    """Stride-8 features, 1x1 score layer, transposed-conv x8 upsampling cropped to the input (as FCN does)."""

    def __init__(self, num_classes: int = K) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, 2, 1)
        )
        self.score = nn.Conv2d(32, num_classes, 1)
        self.up = nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.up(self.score(self.features(x)))  # (N, K, 8 * ceil(H / 8) + 8, ...)
        return y[:, :, 4 : 4 + h, 4 : 4 + w]  # crop to the input size, like FCN's crop layers


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


@pytest.mark.parametrize(
    ("size", "tile", "overlap"), [(10, 4, 0.5), (211, 64, 1 / 3), (150, 96, 0.25), (50, 64, 0.3), (1000, 256, 0.5)]
)
def test_tile_spans_cover_the_axis_on_the_stride_grid(size: int, tile: int, overlap: float) -> None:
    spans = tile_spans(size, tile, overlap)
    assert spans[0].start == 0 and spans[-1].stop == size
    kept = torch.zeros(size)
    for prev, span in zip([None, *spans], spans, strict=False):
        assert 0 < span.stop - span.start <= tile
        assert span.start <= span.keep_start < span.keep_stop <= span.stop
        if prev is not None:
            assert prev.start < span.start and prev.stop <= span.stop
            assert span.keep_start <= prev.keep_stop  # kept parts overlap or abut: no gap
        if tile < size and tile * (1 - overlap) >= 32:
            assert span.start % 32 == 0  # the same sampling phase as whole-image inference
        assert (span.keep_start > span.start) == (span.start > 0)  # margins only at interior cuts
        kept[span.start : span.stop] += span.weight()
    assert (kept > 0).all()


def test_span_weight_is_a_tent_over_the_kept_part() -> None:
    w = Span(start=10, stop=30, keep_start=14, keep_stop=26).weight()
    assert w.shape == (20,)
    assert (w[:4] == 0).all() and (w[16:] == 0).all() and (w[4:16] > 0).all()
    assert w[9] == w[10] == w.max() and w[4] == w[15] == w[4:16].min()


def blend_reference(model: nn.Module, images: torch.Tensor, tile: tuple[int, int], overlap: float) -> torch.Tensor:
    """The plain full-image accumulator: every window's weighted logits into one (N, K, H, W) sum."""
    n, _, h, w = images.shape
    rows, cols = tile_spans(h, min(tile[0], h), overlap), tile_spans(w, min(tile[1], w), overlap)
    total, weights = torch.zeros(n, K, h, w), torch.zeros(h, w)
    with torch.no_grad():
        for r in rows:
            for c in cols:
                weight = r.weight()[:, None] * c.weight()[None, :]
                window = model(images[:, :, r.start : r.stop, c.start : c.stop])
                total[:, :, r.start : r.stop, c.start : c.stop] += window * weight
                weights[r.start : r.stop, c.start : c.stop] += weight
    return total / weights


@pytest.mark.parametrize(("tile", "overlap"), [((64, 64), 1 / 3), ((48, 100), 0.5), ((40, 300), 0.25)])
def test_banded_blending_equals_the_full_accumulator(
    images: torch.Tensor, tile: tuple[int, int], overlap: float
) -> None:
    model = seeded(StridedNet)
    expected = blend_reference(model, images, tile, overlap)
    bands = [(top, band.clone()) for top, band in segment_bands(model, images, tile_size=tile, overlap=overlap)]
    assert len(bands) == len(tile_spans(150, tile[0], overlap)) > 1  # one band per window row: the rolling path
    ends = list(itertools.accumulate(band.shape[2] for _, band in bands))
    assert [top for top, _ in bands] == [0, *ends[:-1]] and ends[-1] == 150  # consecutive, covering every row
    torch.testing.assert_close(torch.cat([band for _, band in bands], dim=2), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(segment_logits(model, images, tile_size=tile, overlap=overlap), expected)


def test_whole_image_shape_and_dtype(images: torch.Tensor) -> None:
    out = segment_logits(seeded(StridedNet), images)
    assert out.shape == (2, K, 150, 211) and out.dtype == torch.float32
    assert not torch.is_inference(images)  # the input is untouched


@pytest.mark.parametrize("tile", [(64, 64), (96, 128), (200, 80)])
def test_tiled_equals_whole_image_beyond_the_receptive_field(images: torch.Tensor, tile: tuple[int, int]) -> None:
    """Windows keep only pixels at least a margin (here >= 16 px) from their interior cuts, on the stride-32 grid.

    LocalNet sees 3 px around a pixel; StandInFCN (stride 8, transposed-convolution upsampling cropped like FCN's)
    about 12 px and samples the image on a grid that windows at odd offsets would shift. Both give the
    whole-image logits everywhere, image borders included, with or without flip.
    """
    for net in (LocalNet, StandInFCN):
        model = seeded(net)
        whole = segment_logits(model, images)
        torch.testing.assert_close(segment_logits(model, images, tile_size=tile), whole, atol=1e-5, rtol=1e-5)
        flipped = segment_logits(model, images, tile_size=tile, flip=True)
        torch.testing.assert_close(flipped, segment_logits(model, images, flip=True), atol=1e-5, rtol=1e-5)


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


def test_bf16_runs_in_bf16_and_agrees_with_fp32(images: torch.Tensor) -> None:
    model = seeded(StridedNet)
    ref = segment_logits(model, images, precision="fp32")
    out = segment_logits(model, images, precision="bf16")
    assert out.dtype == torch.float32
    gap = (out - ref).abs().max().item()
    assert 1e-4 < gap < 0.1, f"bf16 logits differ from fp32 by {gap}: autocast did not run, or ran too coarse"
    assert (ref.argmax(1) == out.argmax(1)).float().mean() >= 0.99


def test_auto_runs_what_the_cpu_computes_natively(images: torch.Tensor) -> None:
    """``auto`` is bf16 on a CPU with AVX512-BF16 or AMX (its flags, read independently of PyTorch), else fp32."""
    model = seeded(StridedNet)
    expected = "bf16" if cpu_native_bf16() else "fp32"
    assert torch.equal(
        segment_logits(model, images, precision="auto"), segment_logits(model, images, precision=expected)
    )


def test_precision_is_validated(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="precision"):
        segment_logits(seeded(StridedNet), images, precision="int8")


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
    band = 100 * 1000.0  # bytes per row of window height (the band of blended logits)
    assert choose_tile_size(mem, (1000, 1500), (256 * 256 + 256 * 100) * 1000) == (288, 288)
    assert choose_tile_size(mem, (1000, 1500), (256 * 256 + 256 * 100) * 1000, bytes_per_row=band) == (256, 256)
    padded = MemoryModel(bytes_per_pixel=1000.0, pad=100.0)
    th, tw = choose_tile_size(padded, (2000, 2000), 456 * 456 * 1000)
    assert (th, tw) == (352, 352) and padded.peak_bytes(th, tw) <= 456 * 456 * 1000


def test_choose_tile_size_probes_a_model() -> None:
    model = seeded(StridedNet)
    per_image = estimate_memory(model).peak_bytes(160, 160)
    tile = choose_tile_size(model, (480, 640), per_image)
    assert tile is not None and max(tile) <= 160 + 32
    assert choose_tile_size(model, (100, 100), per_image) is None


@pytest.mark.parametrize("k", [5, 300])
def test_class_indices_is_the_first_maximum_in_any_layout(k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Masks are the argmax of the logits, ties going to the lowest class, whatever the logits' memory layout.

    Integer logits in 0..2 tie at most pixels; the reference is NumPy's argmax (first occurrence). A small chunk
    makes the NCHW path copy several bands of rows.
    """
    import numpy as np

    monkeypatch.setattr(engine, "_ARGMAX_CHUNK", 3 * k * 40)
    g = torch.Generator().manual_seed(0)
    logits = torch.randint(0, 3, (2, k, 31, 40), generator=g).float()
    expected = np.argmax(logits.numpy(), axis=1)
    layouts = {
        "nchw": logits,
        "channels_last": logits.contiguous(memory_format=torch.channels_last),
        "cropped": F.pad(logits, (1, 2, 3, 4)).contiguous(memory_format=torch.channels_last)[:, :, 3:-4, 1:-2],
        "strided": F.pad(logits, (0, 5))[..., :40],
    }
    for name, x in layouts.items():
        got = class_indices(x)
        assert got.dtype == (torch.uint8 if k <= 255 else torch.int64), name
        assert np.array_equal(got.numpy(), expected), name
