"""Paired transforms keep image and mask aligned, pad with 0 / 255, and pad_collate batches mixed sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from fcnseg.data import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, eval_transforms, pad_collate, train_transforms

# With mean 0 and std 1 the output image is the input / 255, so pixel values can be read back exactly.
RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def encoded_sample(height: int = 48, width: int = 64, seed: int = 0) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """A mask of 16x16 blocks of classes 0..9 and an image whose red channel is 50 + 20 * class (never 0)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 10, (-(-height // 16), -(-width // 16)))
    mask = np.kron(blocks, np.ones((16, 16), dtype=np.int64))[:height, :width]
    image = np.zeros((3, height, width), dtype=np.uint8)
    image[0] = 50 + 20 * mask
    image[1] = np.arange(width, dtype=np.uint8)[None, :]  # makes the image asymmetric, so a lone flip shows
    return tv_tensors.Image(torch.from_numpy(image)), tv_tensors.Mask(torch.from_numpy(mask))


def interior(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels whose (2r+1)^2 neighbourhood has one label: there the bilinear image equals the block value."""
    padded = np.pad(mask, radius, mode="edge")
    same = np.ones_like(mask, dtype=bool)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            same &= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]] == mask
    return same


@pytest.mark.parametrize("seed", range(12))
def test_train_transforms_keep_alignment_and_pad_with_void(seed: int) -> None:
    torch.manual_seed(seed)
    image, mask = encoded_sample(seed=seed)
    out_image, out_mask = train_transforms((64, 64), scale_range=(0.5, 2.0), **RAW)(image, mask)
    assert out_image.dtype == torch.float32 and out_image.shape == (3, 64, 64)
    assert out_mask.dtype == torch.int64 and out_mask.shape == (64, 64)
    red = out_image[0].numpy() * 255
    m = out_mask.numpy()
    assert set(np.unique(m)) <= set(range(10)) | {IGNORE_INDEX}
    # padding: the source has no void, so every 255 is padding, and padding is 0 in the image
    assert np.all(red[m == IGNORE_INDEX] == 0)
    labelled = (m != IGNORE_INDEX) & interior(m, radius=3)
    assert labelled.sum() > 20  # at scale 0.5 the 48x64 source becomes 24x32
    np.testing.assert_allclose(red[labelled], 50 + 20 * m[labelled], atol=1.0)


def test_crop_larger_than_image_pads_image_zero_mask_void() -> None:
    image, mask = encoded_sample(16, 24)
    out_image, out_mask = train_transforms((32, 40), scale_range=None, hflip=False, **RAW)(image, mask)
    m = out_mask.numpy()
    assert (m == IGNORE_INDEX).sum() == 32 * 40 - 16 * 24
    assert torch.all(out_image[:, torch.from_numpy(m == IGNORE_INDEX)] == 0)
    assert sorted(np.unique(m[m != IGNORE_INDEX])) == sorted(np.unique(mask.numpy()))


@pytest.mark.parametrize("seed", range(4))
def test_jitter_changes_image_only(seed: int) -> None:
    """Jitter recolours the image (same seed, with and without it), as a function of colour only; the mask is kept."""
    image, mask = encoded_sample(32, 48, seed=seed)
    outputs = []
    for jitter in (False, True):
        torch.manual_seed(seed)
        outputs.append(train_transforms((32, 48), scale_range=None, hflip=False, jitter=jitter, **RAW)(image, mask))
    (plain, plain_mask), (jittered, jittered_mask) = outputs
    assert torch.equal(jittered_mask, mask) and torch.equal(plain_mask, mask)
    assert (jittered - plain).abs().mean() > 2 / 255  # more than rounding: the colours moved
    # Photometric only: pixels of one input colour get one output colour, so nothing moved or was resampled.
    colours = image.reshape(3, -1).T.numpy()
    out = jittered.reshape(3, -1).T.numpy()
    _, group = np.unique(colours, axis=0, return_inverse=True)
    first = np.zeros(group.max() + 1, dtype=np.int64)
    first[group[::-1]] = np.arange(len(group))[::-1]
    np.testing.assert_allclose(out, out[first[group]], atol=1e-6)


def test_hflip_flips_image_and_mask_together_about_half_the_time() -> None:
    image, mask = encoded_sample(32, 48)
    flipped = []
    for seed in range(16):
        torch.manual_seed(seed)
        out_image, out_mask = train_transforms((32, 48), scale_range=None, hflip=True, **RAW)(image, mask)
        green = np.rint(out_image[1].numpy() * 255)  # the column index of the source pixel
        was_flipped = bool(green[0, 0] == 47)
        want = mask.flip(-1) if was_flipped else mask
        assert torch.equal(out_mask, want)
        columns = np.arange(48)[::-1] if was_flipped else np.arange(48)
        np.testing.assert_array_equal(green, np.broadcast_to(columns, green.shape))
        flipped.append(was_flipped)
    assert 0 < sum(flipped) < 16


def test_random_scale_resizes_mask_by_the_drawn_factor_with_nearest() -> None:
    image, _ = encoded_sample(16, 24)
    labels = torch.randint(0, 10, (16, 24), generator=torch.Generator().manual_seed(0))  # a new class every pixel
    mask = tv_tensors.Mask(labels)
    out_image, out_mask = train_transforms((32, 48), scale_range=(2.0, 2.0), hflip=False, **RAW)(image, mask)
    expected = np.kron(labels.numpy(), np.ones((2, 2), dtype=np.int64))  # NEAREST at 2x repeats every pixel
    np.testing.assert_array_equal(out_mask.numpy(), expected)  # no void: scaled to the crop, nothing padded
    assert out_image.shape == (3, 32, 48)


def test_eval_transforms_normalise_without_geometry_change() -> None:
    image, mask = encoded_sample(17, 23)
    out_image, out_mask = eval_transforms()(image, mask)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(out_image.as_subclass(torch.Tensor), (image.float() / 255 - mean) / std)
    assert out_mask.dtype == torch.int64 and torch.equal(out_mask, mask)


def test_pad_collate_shapes_and_padding() -> None:
    a = (torch.ones(3, 4, 5), torch.zeros(4, 5, dtype=torch.int64))
    b = (torch.full((3, 6, 3), 2.0), torch.ones(6, 3, dtype=torch.int64))
    images, masks = pad_collate([a, b])
    assert images.shape == (2, 3, 6, 5) and masks.shape == (2, 6, 5) and masks.dtype == torch.int64
    assert torch.all(images[0, :, :4, :] == 1) and torch.all(images[0, :, 4:, :] == 0)
    assert torch.all(masks[0, :4] == 0) and torch.all(masks[0, 4:] == IGNORE_INDEX)
    assert torch.all(images[1, :, :, :3] == 2) and torch.all(images[1, :, :, 3:] == 0)
    assert torch.all(masks[1, :, 3:] == IGNORE_INDEX)


def test_dataloader_batches_images_of_different_sizes() -> None:
    transform = eval_transforms()
    samples = [transform(*encoded_sample(h, w)) for h, w in ((16, 24), (24, 16), (8, 8))]
    images, masks = next(iter(DataLoader(samples, batch_size=3, collate_fn=pad_collate)))
    assert images.shape == (3, 3, 24, 24) and masks.shape == (3, 24, 24)
    assert (masks[2] != IGNORE_INDEX).sum() == 64


def test_normalize_uint8_is_the_eval_transform_bit_for_bit() -> None:
    """Prediction's normalisation of a batch equals the evaluation transform's, and keeps a channels-last layout."""
    from fcnseg.data.normalize import IMAGENET_MEAN, IMAGENET_STD, normalize_uint8
    from fcnseg.data.transforms import eval_transforms

    image = torch.randint(0, 256, (3, 37, 53), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected, _ = eval_transforms()(tv_tensors.Image(image), tv_tensors.Mask(torch.zeros(37, 53, dtype=torch.int64)))
    batch = image.permute(1, 2, 0).contiguous()[None].permute(0, 3, 1, 2)  # (1, 3, H, W) viewed from (1, H, W, 3)
    got = normalize_uint8(batch, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(got[0], expected)
    assert got.is_contiguous(memory_format=torch.channels_last)
    # The closed form, to float32 rounding: (v / 255 - mean) / std.
    reference = (image.double() / 255 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1).double()) / torch.tensor(
        IMAGENET_STD
    ).view(3, 1, 1).double()
    torch.testing.assert_close(got[0].double(), reference, rtol=0, atol=1e-6)
