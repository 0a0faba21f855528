"""The dense CRF (fcnseg.inference.crf) against brute-force O(N^2) NumPy references on small images.

The references compute the kernels of Krähenbühl & Koltun 2011 pixel pair by pixel pair, in float64, independently
of the filtering code: the Gaussian kernel's separable filter must match them to its truncation; the permutohedral
lattice, an approximation, to the tolerance docs/crf.md states.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools

import numpy as np
import pytest
import torch

from fcnseg.cli.inference_args import add_inference_arguments, crf_params
from fcnseg.cli.main import UserError
from fcnseg.inference.crf import CRFParams, PermutohedralLattice, dense_crf, free_energy, gaussian_filter, mean_field
from fcnseg.inference.predictor import Predictor

H, W, K = 12, 16, 4

# The lattice's normalised messages against the exact ones (relative L2 error over the image), measured 0.04-0.12
# on these images (0.09 at DeepLab's widths); docs/crf.md states the bound.
LATTICE_TOLERANCE = 0.12


def _image(seed: int) -> np.ndarray:
    """A 12x16 RGB image of four flat colour regions with noise (std 8 levels), float64 ``(3, H, W)``."""
    rng = np.random.default_rng(seed)
    image = np.empty((3, H, W))
    image[:, :, :6] = np.array([200.0, 40, 40])[:, None, None]
    image[:, 6:, 6:] = np.array([30.0, 30, 220])[:, None, None]
    image[:, :6, 6:] = 128.0
    image[:, 4:8, 10:14] = np.array([40.0, 180, 60])[:, None, None]
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).round()


def _positions() -> np.ndarray:
    ys, xs = np.mgrid[0:H, 0:W]
    return np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)  # (P, 2) as (x, y)


def _kernel(features: np.ndarray) -> np.ndarray:
    """``exp(-|f_i - f_j|^2 / 2)`` for every pair: ``(P, d) -> (P, P)``."""
    diff = features[:, None, :] - features[None, :, :]
    return np.exp(-0.5 * (diff**2).sum(-1))


def _exact_kernels(image: np.ndarray, params: CRFParams) -> np.ndarray:
    """``w1 k~1 + w2 k~2`` ``(P, P)`` with the symmetric normalisation ``k / sqrt(n_i n_j)``, self included."""
    pos = _positions()
    bilateral = _kernel(np.concatenate([pos / params.theta_alpha, image.reshape(3, -1).T / params.theta_beta], 1))
    gaussian = _kernel(pos / params.theta_gamma)
    total = np.zeros_like(gaussian)
    for weight, k in ((params.w1, bilateral), (params.w2, gaussian)):
        norm = 1 / np.sqrt(k.sum(1))
        total += weight * norm[:, None] * k * norm[None, :]
    return total


def _exact_mean_field(logits: np.ndarray, image: np.ndarray, params: CRFParams) -> np.ndarray:
    """Mean field with the exact kernels: ``(K, H, W)`` -> ``(K, H, W)``."""
    kernel = _exact_kernels(image, params)
    log_p = logits.reshape(K, -1).T - np.log(np.exp(logits.reshape(K, -1).T).sum(1, keepdims=True))
    q = np.exp(log_p)
    for _ in range(params.iterations):
        z = log_p + kernel @ q
        q = np.exp(z - z.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
    return q.T.reshape(K, H, W)


def _logits(seed: int) -> torch.Tensor:
    """Noisy scores that mostly follow the image's regions: ``(K, H, W)`` float32."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((H, W), dtype=int)
    labels[:, 6:] = 1
    labels[6:, 6:] = 2
    labels[4:8, 10:14] = 3
    scores = 1.5 * np.eye(K)[labels].transpose(2, 0, 1) + rng.normal(0, 1.0, (K, H, W))
    return torch.from_numpy(scores).float()


def test_gaussian_filter_is_exact_up_to_truncation():
    values = torch.rand(1, 3, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for theta in (0.7, 2.0, 3.0):
        exact = _kernel(_positions() / theta) @ values[0].reshape(3, -1).T.numpy()
        got = gaussian_filter(values, theta)[0].reshape(3, -1).T.numpy()
        # Truncation at 4 theta drops at most 2 * Phi(-4) = 6.3e-5 of each axis' mass.
        np.testing.assert_allclose(got, exact, rtol=2e-4, atol=0)


@pytest.mark.parametrize("widths", [(30.0, 2.0), (121.0, 5.0), (6.0, 13.0), (10.0, 20.0)])  # CRFParams, DeepLab
@pytest.mark.parametrize("seed", [0, 1])
def test_lattice_messages_match_brute_force(widths, seed):
    """Normalised bilateral messages ``k / sqrt(n_i n_j)`` of class probabilities, lattice vs O(N^2)."""
    theta_alpha, theta_beta = widths
    image = _image(seed)
    features = np.concatenate([_positions() / theta_alpha, image.reshape(3, -1).T / theta_beta], 1)
    probs = torch.softmax(2 * torch.randn(H * W, K, generator=torch.Generator().manual_seed(seed)), 1)
    k = _kernel(features)
    norm = 1 / np.sqrt(k.sum(1, keepdims=True))
    exact = norm * (k @ (norm * probs.double().numpy()))
    lattice = PermutohedralLattice(torch.from_numpy(features).float())
    lnorm = lattice.filter(torch.ones(H * W, 1)).rsqrt()
    got = (lnorm * lattice.filter(lnorm * probs)).double().numpy()
    error = np.linalg.norm(got - exact) / np.linalg.norm(exact)
    assert error < LATTICE_TOLERANCE, f"lattice relative L2 error {error:.3f}"
    # A lattice that ignored the colour features would be far off on this image.
    blind = PermutohedralLattice(torch.from_numpy(features[:, :2]).float())
    bnorm = blind.filter(torch.ones(H * W, 1)).rsqrt()
    blind_error = np.linalg.norm((bnorm * blind.filter(bnorm * probs)).double().numpy() - exact)
    assert blind_error / np.linalg.norm(exact) > 2 * error


def test_mean_field_labels_agree_with_exact_mean_field():
    params = CRFParams(iterations=5, w1=4.0, theta_alpha=8.0, theta_beta=13.0, w2=3.0, theta_gamma=1.0)
    agreement = []
    for seed in range(3):
        image, logits = _image(seed), _logits(seed)
        exact = _exact_mean_field(logits.double().numpy(), image, params)
        got = mean_field(logits, torch.from_numpy(image).float(), params)
        agreement.append((got.argmax(0).numpy() == exact.argmax(0)).mean())
        np.testing.assert_allclose(got.numpy(), exact, atol=0.1)  # measured: 0.06
    assert np.mean(agreement) >= 0.97, agreement
    # ... and the CRF changes labels here: the comparison is not the softmax against itself.
    assert (_exact_mean_field(logits.double().numpy(), image, params).argmax(0) != logits.argmax(0).numpy()).any()


def test_free_energy_decreases_over_iterations():
    params = CRFParams(iterations=0, w1=4.0, theta_alpha=8.0, theta_beta=13.0, w2=3.0, theta_gamma=1.0)
    image, logits = torch.from_numpy(_image(3)).float(), _logits(3)
    energies = []
    for t in range(6):
        step = dataclasses.replace(params, iterations=t)
        energies.append(free_energy(mean_field(logits, image, step), logits, image, params))
    assert all(b < a for a, b in itertools.pairwise(energies)), energies
    assert energies[-1] < energies[0] - 1.0  # a real decrease, not rounding


def test_zero_weights_give_the_argmax_of_the_logits():
    logits, image = _logits(4)[None], torch.from_numpy(_image(4)).to(torch.uint8)[None]
    for params in (CRFParams(w1=0.0, w2=0.0), CRFParams(iterations=0)):
        q = dense_crf(logits, image, params)
        torch.testing.assert_close(q, logits.softmax(1))
        assert torch.equal(q.argmax(1), logits.argmax(1))


def test_bands_match_the_whole_image():
    """Images above ``max_pixels`` run in bands with margins: the labels stay those of the whole image.

    Not exactly: the lattice blurs through the vertices its points occupy, so a band's lattice differs from the
    whole image's near the band (measured: 99.2-99.7% of the labels agree).
    """
    params = CRFParams(iterations=5, theta_alpha=2.0, theta_beta=13.0, theta_gamma=1.0)
    logits = torch.cat([_logits(5)] * 4, 1)[None]  # (1, K, 48, 16)
    image = torch.from_numpy(np.concatenate([_image(5)] * 4, 1)).to(torch.uint8)[None]
    whole = dense_crf(logits, image, params)
    banded = dense_crf(logits, image, params, max_pixels=16 * 20)  # margins of 8 rows, bands of 8
    assert (banded.argmax(1) == whole.argmax(1)).float().mean() >= 0.98
    gaussian = dataclasses.replace(params, w1=0.0)  # exact, and the margin covers its 4 theta_gamma
    banded = dense_crf(logits, image, gaussian, max_pixels=16 * 20)
    torch.testing.assert_close(banded, dense_crf(logits, image, gaussian))


def test_params_are_checked():
    with pytest.raises(ValueError, match="weights"):
        CRFParams(w1=-1.0)
    with pytest.raises(ValueError, match="widths"):
        CRFParams(theta_beta=0.0)
    with pytest.raises(ValueError, match="iterations"):
        CRFParams(iterations=-1)


class _Colours(torch.nn.Module):
    """A 'model' whose class scores are its input bands: logits = normalised image (K = 3)."""

    in_channels = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 4


def test_predictor_applies_the_crf():
    rng = np.random.default_rng(6)
    image = np.clip(_image(6).transpose(1, 2, 0) + rng.normal(0, 30, (H, W, 3)), 0, 255).astype(np.uint8)
    plain = Predictor(_Colours(), mean=(0.5,) * 3, std=(0.5,) * 3, precision="fp32")
    params = CRFParams(iterations=5, theta_alpha=8.0, theta_beta=20.0, theta_gamma=1.0)
    crf = Predictor(_Colours(), mean=(0.5,) * 3, std=(0.5,) * 3, precision="fp32", crf=params)
    mask, probs = crf.predict(image, return_probs=True)
    logits = plain.logits([image])
    colours = torch.from_numpy(image).permute(2, 0, 1)[None]
    expected = dense_crf(logits, colours, params)[0]
    torch.testing.assert_close(torch.from_numpy(probs), expected, atol=1e-5, rtol=1e-4)
    assert np.array_equal(mask, expected.argmax(0).numpy())
    assert not np.array_equal(mask, plain.predict(image))  # the CRF changed something
    assert torch.equal(crf.infer(crf._prepare([image])).argmax(1)[0], torch.from_numpy(mask).long())  # eval = predict
    tiled = Predictor(_Colours(), mean=(0.5,) * 3, std=(0.5,) * 3, precision="fp32", crf=params, tile_size=(8, 8))
    assert np.array_equal(tiled.predict(image), mask)  # the model is pointwise: blended tiles are the whole image


def test_cli_flags_build_the_params():
    parser = argparse.ArgumentParser()
    add_inference_arguments(parser)
    assert crf_params(parser.parse_args([])) is None
    assert crf_params(parser.parse_args(["--crf"])) == CRFParams()
    got = crf_params(parser.parse_args(["--crf", "--crf-iters", "3", "--crf-w1", "5", "--crf-theta-beta", "4"]))
    assert got == CRFParams(iterations=3, w1=5.0, theta_beta=4.0)
    with pytest.raises(UserError, match="without --crf"):
        crf_params(parser.parse_args(["--crf-iters", "3"]))
    with pytest.raises(UserError, match="widths"):
        crf_params(parser.parse_args(["--crf", "--crf-theta-alpha", "0"]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu():
    params = CRFParams(iterations=5, theta_alpha=8.0, theta_beta=13.0, theta_gamma=1.0)
    logits, image = _logits(7)[None], torch.from_numpy(_image(7)).to(torch.uint8)[None]
    cpu = dense_crf(logits, image, params)
    gpu = dense_crf(logits.cuda(), image.cuda(), params)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)
