"""Fully connected CRF post-processing: mean-field inference on a segmentation model's softmax.

Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge Potentials", NIPS 2011, as
DeepLab (Chen et al., ICLR 2015) put it on an FCN's scores. The energy of a labelling ``x`` of the pixels is

    E(x) = sum_i U_i(x_i) + sum_{i<j} [x_i != x_j] * (w1 * k1(i, j) + w2 * k2(i, j))       (Potts compatibility)

with the unary ``U_i = -log softmax(logits)_i``, the bilateral (appearance) kernel
``k1 = exp(-|p_i - p_j|^2 / (2 theta_alpha^2) - |I_i - I_j|^2 / (2 theta_beta^2))`` on pixel positions ``p`` and
8-bit RGB colours ``I``, and the Gaussian (smoothness) kernel ``k2 = exp(-|p_i - p_j|^2 / (2 theta_gamma^2))``. Each
kernel is normalised symmetrically, ``k(i, j) / sqrt(n_i n_j)`` with ``n_i = sum_j k(i, j)`` (Krähenbühl's
``NORMALIZE_SYMMETRIC``, the default of his second release), which keeps the weights on the scale of log-probabilities
whatever the image size. Mean-field inference updates all pixels in parallel:

    Q_i(l) ∝ exp(-U_i(l) + sum_m w_m sum_j k_m(i, j) / sqrt(n_mi n_mj) Q_j(l))

The sum includes ``j = i`` as Krähenbühl's code does (the paper's ``j != i`` drops a term of ``1 / n_mi``); the
updates lower the mean-field free energy :func:`free_energy` of that kernel.

Message passing (the sums over ``j``):

- Gaussian kernel: separable Gaussian filtering (two depthwise 1-D convolutions, zero padding), exact up to the
  truncation of the kernel at ``4 theta_gamma`` pixels (the dropped tail is ``2 Phi(-4) = 6.3e-5`` of each 1-D mass).
- Bilateral kernel: the permutohedral lattice (Adams, Baek & Davis, Eurographics 2010), as in Krähenbühl's code:
  splat onto the lattice's vertices with barycentric weights, blur along each of the ``d + 1`` lattice directions
  with ``[1/2, 1, 1/2]``, slice back, times ``1 / (1 + 2^-d)``. An approximation of the Gaussian: ``tests/test_crf.py``
  compares it with the O(N^2) sum (docs/crf.md gives the error).

Memory: one image at a time; the lattice of an image of ``P`` pixels holds ``(d + 1) = 6`` vertex indices and
weights per pixel and at most ``6 P`` vertices. Images of more than ``max_pixels`` pixels run in horizontal bands
with a margin of ``2 theta_alpha`` rows (at least ``8 theta_gamma``) on each side whose result is discarded (messages
from farther than the margin are dropped there).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CRFParams",
    "PermutohedralLattice",
    "crf_colors",
    "dense_crf",
    "free_energy",
    "gaussian_filter",
    "mean_field",
]

TRUNCATE = 4.0
"""The Gaussian kernel's radius in standard deviations (``ceil(4 theta_gamma)`` pixels)."""

MAX_PIXELS = 2**22
"""Pixels of an image (4.2 megapixels) the CRF processes at once; larger images run in bands of rows."""


@dataclasses.dataclass(frozen=True)
class CRFParams:
    """Parameters of the dense CRF (names of Krähenbühl & Koltun 2011 and DeepLab).

    The defaults were chosen on CamVid's validation split by ``benchmarks/crf_search.py`` (docs/crf.md), starting
    from DeepLab-LargeFOV's published values (``w1 = 4, theta_alpha = 121, theta_beta = 5, w2 = 3, theta_gamma = 3``,
    10 iterations, chosen on VOC 2012 val); on 20 CamVid val images, with the logits of the ``--preset camvid``
    model at its recorded input scale, the search kept ``w1 = 3, theta_alpha = 30, theta_beta = 2, w2 = 1,
    theta_gamma = 1`` and 5 iterations.

    Attributes:
        iterations: mean-field iterations (0: the softmax itself).
        w1: weight of the bilateral (appearance) kernel.
        theta_alpha: its position width, pixels.
        theta_beta: its colour width, 8-bit levels.
        w2: weight of the Gaussian (smoothness) kernel.
        theta_gamma: its position width, pixels.
    """

    iterations: int = 5
    w1: float = 3.0
    theta_alpha: float = 30.0
    theta_beta: float = 2.0
    w2: float = 1.0
    theta_gamma: float = 1.0

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ValueError(f"CRF iterations must be 0 or more, got {self.iterations}")
        if self.w1 < 0 or self.w2 < 0:
            raise ValueError(f"CRF kernel weights must be 0 or more, got w1={self.w1}, w2={self.w2}")
        if min(self.theta_alpha, self.theta_beta, self.theta_gamma) <= 0:
            raise ValueError(
                "CRF kernel widths must be positive, got "
                f"theta_alpha={self.theta_alpha}, theta_beta={self.theta_beta}, theta_gamma={self.theta_gamma}"
            )


def gaussian_filter(values: Tensor, theta: float, truncate: float = TRUNCATE) -> Tensor:
    """``sum_j exp(-|p_i - p_j|^2 / (2 theta^2)) v_j`` over the pixels ``j`` within ``ceil(truncate * theta)``.

    Separable: a horizontal then a vertical depthwise convolution with zero padding (``j`` includes ``i``).

    Args:
        values: ``(N, C, H, W)`` float.
        theta: the kernel's standard deviation in pixels.
        truncate: the radius in standard deviations.

    Returns:
        ``(N, C, H, W)``, the dtype of ``values``.
    """
    radius = max(1, math.ceil(truncate * theta))
    offsets = torch.arange(-radius, radius + 1, device=values.device, dtype=values.dtype)
    taps = torch.exp(-(offsets**2) / (2 * theta**2))
    c = values.shape[1]
    out = F.conv2d(values, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
    return F.conv2d(out, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)


class PermutohedralLattice:
    """Gaussian filtering in ``d`` feature dimensions on the permutohedral lattice (Adams et al. 2010).

    Built once for the features of ``P`` points; :meth:`filter` then approximates
    ``out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j`` (``j`` includes ``i``) in ``O((d + 1) (P + 2 M) C)`` for the ``M``
    lattice vertices the points touch. The construction follows Krähenbühl's ``permutohedral.cpp`` step by step,
    vectorised; splatting and slicing are sparse ``(M, P)`` and ``(P, M)`` CSR matrix products.

    Args:
        features: ``(P, d)`` float, already divided by the kernel's widths.
    """

    def __init__(self, features: Tensor) -> None:
        p, d = features.shape
        if p * (d + 1) >= 2**31:
            raise ValueError(f"the CRF's lattice indexes at most 2^31 / {d + 1} points at once, got {p}")
        self.d, self.num_points = d, p
        d1, dev = d + 1, features.device
        # Elevate onto the plane sum(x) = 0 of R^(d+1), scaled so that the lattice blur is a unit-variance Gaussian.
        i = torch.arange(1, d + 1, device=dev, dtype=torch.float32)
        cf = features.float() * (math.sqrt(2.0 / 3.0) * d1 / torch.sqrt(i * (i + 1)))  # (P, d)
        tail = cf.flip(1).cumsum(1).flip(1)  # tail[:, m] = sum_{m' >= m} cf[:, m']
        elevated = torch.cat([tail[:, :1], torch.cat([tail[:, 1:], tail.new_zeros(p, 1)], 1) - i * cf], 1)  # (P, d+1)
        # The nearest remainder-0 lattice point, and the simplex that holds the point (the ranks of the remainders,
        # ties broken by coordinate order as in the reference).
        rounded = torch.round(elevated / d1)
        rem0 = rounded * d1
        diff = elevated - rem0
        rank = _ranks(diff) + rounded.sum(1, keepdim=True).long()
        low, high = rank < 0, rank > d
        rank = rank + d1 * low - d1 * high
        rem0 = rem0 + d1 * low - d1 * high
        # Barycentric weights of the d+1 vertices of the simplex.
        v = (elevated - rem0) / d1
        bary = torch.zeros(p, d + 2, device=dev)
        bary.scatter_add_(1, d - rank, v).scatter_add_(1, d - rank + 1, -v)
        bary[:, 0] += 1.0 + bary[:, d + 1]
        vertex, by_vertex, codes, strides = self._vertices(rem0.long()[:, :d], rank[:, :d])
        self.num_vertices = m = codes.numel()
        self.neighbours = self._neighbours(codes, strides)  # (d+1, 2, M); index M: a zero row
        vertex, weights = vertex.reshape(-1), bary[:, :d1].gather(1, by_vertex).reshape(-1)  # (P (d+1),) point-major
        order = torch.argsort(vertex, stable=True)  # vertex-major: the transpose's CSR (int32 sorts 2x faster)
        splat_rows = torch.cat([vertex.new_zeros(1), torch.bincount(vertex, minlength=m).cumsum(0, dtype=torch.int32)])
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the products used here are stable
            warnings.simplefilter("ignore", UserWarning)
            crow = torch.arange(0, p * d1 + 1, d1, device=dev, dtype=torch.int32)
            gain = 1.0 / (1.0 + 2.0**-d)  # the blur's, divided out by the slice
            self.slice_matrix = torch.sparse_csr_tensor(crow, vertex, weights * gain, (p, m))
            self.splat_matrix = torch.sparse_csr_tensor(
                splat_rows, (order // d1).int(), weights.index_select(0, order), (m, p)
            )

    @staticmethod
    def _vertices(rem0: Tensor, rank: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The vertices of each point's simplex ``(P, d+1)`` in increasing order (CSR rows hold sorted column indices),
        the remainder of each (the index of its barycentric weight), the sorted vertex codes ``(M,)`` and the strides.

        Vertex ``r`` is ``rem0 + canonical[r][rank]`` with ``canonical[r][k] = r if k <= d - r else r - (d + 1)``
        (first ``d`` coordinates; they sum to 0 with the last). Points share simplices, so the simplices are made
        unique first and only their vertices hashed.
        """
        d, dev = rank.shape[1], rank.device
        d1 = d + 1
        simplex = torch.cat([rem0 // d1, rank], 1)
        _, first, inverse = _unique_first(_codes(simplex, simplex.amin(0), simplex.amax(0))[0])  # (S,), (P,)
        rem0, rank = rem0.index_select(0, first), rank.index_select(0, first)
        # Vertex keys lie within -d1..d of rem0, their neighbours within d more. Codes are linear in the keys, so
        # vertex r's is rem0's + r sum(strides) - d1 sum_k strides_k [rank_k > d - r], without forming the keys.
        low = rem0.amin(0) - 2 * d1
        base, strides = _codes(rem0, low, rem0.amax(0) + 2 * d1)
        # The last sum: each stride placed at its coordinate's rank, summed from the top rank down.
        by_rank = strides.new_zeros(rank.shape[0], d1).scatter_(1, rank, strides.expand_as(rank))
        wrapped = torch.cat([torch.zeros_like(by_rank[:, :1]), by_rank.flip(1).cumsum(1)[:, :d]], 1)  # (S, d+1)
        vertex_codes = base[:, None] + torch.arange(d1, device=dev) * strides.sum() - d1 * wrapped
        codes, of_simplex = torch.unique(vertex_codes, sorted=True, return_inverse=True)
        vertex, remainder = of_simplex.int().view(-1, d1).sort(1)  # sorted once per simplex, not per point
        return vertex.index_select(0, inverse), remainder.index_select(0, inverse), codes, strides

    def _neighbours(self, codes: Tensor, strides: Tensor) -> Tensor:
        """For each lattice direction ``j``, the vertices at ``key -+ (1, .., 1) +- (d + 1) e_j`` (``M`` if absent).

        One binary search per direction: if ``u`` is ``v``'s neighbour on one side, ``v`` is ``u``'s on the other.
        """
        d, m = self.d, codes.numel()
        out = torch.full((d + 1, 2, m + 1), m, dtype=torch.long, device=codes.device)  # column M: absent ones' writes
        every = torch.arange(m, device=codes.device)
        for j in range(d + 1):
            target = codes - (strides.sum() - (d + 1) * (strides[j] if j < d else 0))
            at = torch.searchsorted(codes, target).clamp_(max=m - 1)
            out[j, 0, :m] = below = torch.where(codes[at] == target, at, m)
            out[j, 1].scatter_(0, below, every)
        return out[:, :, :m].contiguous()

    def filter(self, values: Tensor) -> Tensor:
        """``(P, C)`` float32 -> ``(P, C)``: splat, blur along each lattice direction, slice."""
        grid = torch.cat([self.splat_matrix @ values, values.new_zeros(1, values.shape[1])])  # (M + 1, C); row M: 0
        for j in range(self.d + 1):
            blurred = grid.index_select(0, self.neighbours[j, 0]).add_(grid.index_select(0, self.neighbours[j, 1]))
            grid[:-1].add_(blurred, alpha=0.5)
        return self.slice_matrix @ grid[:-1]

    def weigh(self, before: Tensor, after: Tensor) -> None:
        """Make :meth:`filter` ``after * filter(before * values)`` for per-point factors ``(P, 1)``, in its matrices
        (two products over ``(P, C)`` saved per call)."""
        self.splat_matrix.values().mul_(before.reshape(-1).index_select(0, self.splat_matrix.col_indices()))
        self.slice_matrix.values().mul_(after.reshape(-1).repeat_interleave(self.d + 1))


def _ranks(values: Tensor) -> Tensor:
    """``(P, n)`` -> the rank of each value in its row, largest first, ties by position (a stable descending sort)."""
    columns = values.T.contiguous()  # n (n - 1) comparisons of contiguous columns: twice as fast as argsort (n = 6)
    n = columns.shape[0]
    rank = torch.zeros(columns.shape, dtype=torch.long, device=values.device)
    for i in range(n):
        for j in range(n):
            if j != i:  # j ranks before i
                rank[i] += columns[j] > columns[i] if j > i else columns[j] >= columns[i]
    return rank.T


def _codes(keys: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
    """Integer rows ``(Q, n)`` within ``[low, high]`` -> one int64 code each (mixed radix), and the strides.

    Codes are linear in the keys: ``code(k + e) = code(k) + sum(e * strides)``.
    """
    span = high - low + 1
    if math.prod(float(s) for s in span.tolist()) >= 2.0**62:
        raise ValueError("the CRF's lattice is too large to index: use wider kernels (theta_alpha, theta_beta)")
    strides = torch.cumprod(torch.cat([span.new_ones(1), span[:-1]]), 0)
    codes = ((keys - low) * strides).sum(1)  # not a matmul: CUDA has no int64 one
    return codes, strides


def _unique_first(codes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted unique values of ``codes`` ``(Q,)``, an index of each one's occurrence, and the inverse ``(Q,)``."""
    unique, inverse = torch.unique(codes, sorted=True, return_inverse=True)
    first = torch.empty_like(unique).scatter_(0, inverse, torch.arange(codes.numel(), device=codes.device))
    return unique, first, inverse


def crf_colors(images: Tensor) -> Tensor:
    """The colours the bilateral kernel compares: ``(N, B, H, W)`` -> ``(N, 3, H, W)`` float32 on the 0..255 scale.

    RGB as given; one band (grey) repeated three times; other band counts: the first three bands (two: the first
    band as grey). Integer images are taken as 8-bit levels, float images as ``[0, 1]``.
    """
    x = images.float() if not images.is_floating_point() else images.float() * 255.0
    b = x.shape[1]
    return x[:, :1].expand(-1, 3, -1, -1) if b < 3 else x[:, :3]


class _Kernels:
    """The two normalised kernels of one image, as messages for pixel-major ``(H W, K)`` marginals.

    ``message(q)_i = sum_m w_m sum_j k_m(i, j) / sqrt(n_mi n_mj) q_j``, ``n_mi = sum_j k_m(i, j)``; ``j`` includes
    ``i``, as in Krähenbühl's code (the term is ``1 / n_mi`` of the message).
    """

    def __init__(self, colors: Tensor, params: CRFParams) -> None:
        _, h, w = colors.shape
        self.params, self.hw = params, (h, w)
        self.lattice: PermutohedralLattice | None = None
        if params.w1 > 0:
            ys, xs = torch.meshgrid(
                torch.arange(h, device=colors.device, dtype=torch.float32),
                torch.arange(w, device=colors.device, dtype=torch.float32),
                indexing="ij",
            )
            position = torch.stack([xs, ys]).view(2, -1) / params.theta_alpha
            features = torch.cat([position, colors.reshape(3, -1) / params.theta_beta]).T  # (HW, 5)
            self.lattice = PermutohedralLattice(features)
            norm1 = self.lattice.filter(colors.new_ones(h * w, 1)).clamp_min(1e-6).rsqrt()  # (HW, 1)
            self.lattice.weigh(norm1, norm1 * params.w1)
        if params.w2 > 0:
            self.norm2 = self._gaussian(colors.new_ones(h * w, 1)).rsqrt()  # (HW, 1)
            self.scale2 = self.norm2 * params.w2

    def _gaussian(self, q: Tensor) -> Tensor:
        """Gaussian filtering of pixel-major ``(H W, C)`` values, as channels-last images."""
        (h, w), c = self.hw, q.shape[1]
        image = q.view(1, h, w, c).permute(0, 3, 1, 2)  # (1, C, H, W) channels-last
        return gaussian_filter(image, self.params.theta_gamma).permute(0, 2, 3, 1).reshape(h * w, c)

    def message(self, q: Tensor) -> Tensor:
        """Contiguous ``(H W, K)`` -> ``(H W, K)``."""
        out = None
        if self.lattice is not None:
            out = self.lattice.filter(q)  # normalised and weighted by the lattice's matrices
        if self.params.w2 > 0:
            gaussian = self._gaussian(q * self.norm2).mul_(self.scale2)
            out = gaussian if out is None else out.add_(gaussian)
        return torch.zeros_like(q) if out is None else out


def mean_field(logits: Tensor, colors: Tensor, params: CRFParams) -> Tensor:
    """Mean-field inference for one image: ``(K, H, W)`` logits, ``(3, H, W)`` 0..255 colours -> ``Q`` ``(K, H, W)``."""
    k, h, w = logits.shape
    # Class-major (K, HW) for the softmax over the classes (20x faster than over dim 1 of (HW, K)), pixel-major
    # (HW, K) for the messages (the lattice's sparse products and the channels-last convolutions want it).
    log_p = torch.log_softmax(logits.float().reshape(k, -1), 0)  # -U
    q = log_p.exp()
    if params.iterations > 0 and (params.w1 > 0 or params.w2 > 0):
        kernels = _Kernels(colors.float(), params)
        for _ in range(params.iterations):
            q = torch.softmax(kernels.message(q.T.contiguous()).T.add(log_p), 0)
    return q.view(k, h, w)


def free_energy(q: Tensor, logits: Tensor, colors: Tensor, params: CRFParams) -> float:
    """The mean-field free energy of marginals ``Q`` ``(K, H, W)``, up to a constant, which :func:`mean_field` lowers.

    ``sum_i <Q_i, U_i> - 1/2 sum_m w_m sum_ij k~_m(i, j) <Q_i, Q_j> + sum_i <Q_i, log Q_i>`` with the normalised
    kernels ``k~`` and the message passing of :func:`mean_field` (Potts: ``[x_i != x_j] = 1 - [x_i = x_j]``, the
    constant dropped).
    """
    k = q.shape[0]
    q = q.float().reshape(k, -1).T.contiguous()  # (HW, K)
    unary = -torch.log_softmax(logits.float().reshape(k, -1).T, 1)
    pairwise = -0.5 * (q * _Kernels(colors.float(), params).message(q)).sum()
    entropy = (q * q.clamp_min(1e-30).log()).sum()
    return float((q * unary).sum() + pairwise + entropy)


def _band_rows(height: int, width: int, params: CRFParams, max_pixels: int) -> tuple[int, int]:
    """Rows kept per band and the margin on each side, for images larger than ``max_pixels``.

    Bands keep at least ``margin`` rows, so that margins at most triple the work (very wide images then exceed
    ``max_pixels`` per band: ``3 margin width`` pixels).
    """
    margin = math.ceil(2 * max(params.theta_alpha if params.w1 > 0 else 0, TRUNCATE * params.theta_gamma))
    rows = max(1, margin, max_pixels // max(width, 1) - 2 * margin)
    return min(rows, height), margin


def dense_crf(logits: Tensor, images: Tensor, params: CRFParams, *, max_pixels: int = MAX_PIXELS) -> Tensor:
    """The dense CRF's marginals for a batch: ``(N, K, H, W)`` logits, ``(N, B, H, W)`` images -> ``(N, K, H, W)``.

    Args:
        logits: the model's scores, float (any device: the CRF runs where they are).
        images: the images the logits are of: uint8 (8-bit levels) or float in ``[0, 1]``; RGB, or the first
            three bands / the grey band (see :func:`crf_colors`).
        params: kernel widths, weights, iterations.
        max_pixels: images of more pixels run in horizontal bands with margins (memory stays bounded).

    Returns:
        The mean-field marginals ``Q`` (probabilities over the ``K`` classes), float32.
    """
    if logits.ndim != 4 or images.ndim != 4 or logits.shape[0] != images.shape[0]:
        raise ValueError(f"CRF needs (N, K, H, W) logits and (N, B, H, W) images, got {tuple(logits.shape)} "
                         f"and {tuple(images.shape)}")  # fmt: skip
    if logits.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"CRF logits {tuple(logits.shape[-2:])} and images {tuple(images.shape[-2:])} differ in size")
    colors = crf_colors(images.to(logits.device))
    out = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
    h, w = logits.shape[-2:]
    rows, margin = _band_rows(h, w, params, max_pixels) if h * w > max_pixels else (h, 0)
    for n in range(logits.shape[0]):
        for top in range(0, h, rows):
            lo, hi = max(0, top - margin), min(h, top + rows + margin)
            q = mean_field(logits[n, :, lo:hi], colors[n, :, lo:hi], params)
            out[n, :, top : top + rows] = q[:, top - lo : top - lo + min(rows, h - top)]
    return out
