"""amax from one collected |x| histogram, for every histogram calibrator.

percentile is pytorch-quantization's own. entropy and mse give the same answers as its `_compute_amax_entropy`
and `_compute_amax_mse` (tests compare them), but entropy is vectorised (upstream loops in Python over every
bin of every candidate: seconds per quantizer) and mse runs on the CPU (upstream calls .cuda()).
"""

from __future__ import annotations

import numpy as np
from pytorch_quantization.calib.histogram import _compute_amax_percentile
from scipy.special import rel_entr

NUM_BITS, START_BIN = 8, 128


def entropy_amax(hist: np.ndarray, edges: np.ndarray, num_bits: int = NUM_BITS, start_bin: int = START_BIN) -> float:
    """The clipping edge whose 128-level re-quantized histogram has the least KL divergence from the data."""
    bins = np.array(hist, dtype=np.int64)
    bins[0] = bins[1]
    nbins = 1 << (num_bits - 1)
    best, best_i = np.inf, start_bin
    tail = np.concatenate([np.cumsum(bins[::-1])[::-1], [0]])  # tail[i] = bins[i:].sum()
    for i in range(start_bin, len(bins) + 1):
        group = np.arange(i) * nbins // i  # = upstream's np.digitize on linspace(0, i, nbins + 1): exact edges
        kept = bins[:i]
        nonzero = kept != 0
        sums = np.bincount(group, weights=kept, minlength=nbins)
        counts = np.bincount(group, weights=nonzero, minlength=nbins)
        spread = np.divide(sums, counts, out=np.zeros(nbins), where=counts > 0)
        candidate = np.where(nonzero, spread[group], 0.0)
        reference = kept.astype(np.float64)
        reference[-1] += tail[i]
        if candidate.sum() == 0:
            continue
        div = float(rel_entr(reference / reference.sum(), candidate / candidate.sum()).sum())
        if div <= best:  # ties go to the larger amax, as upstream's "last argmin"
            best, best_i = div, i
    return float(edges[best_i])


def mse_amax(hist: np.ndarray, edges: np.ndarray, num_bits: int = NUM_BITS, start_bin: int = START_BIN) -> float:
    """The bin centre that, as amax, minimises the histogram-weighted squared quantization error."""
    counts = np.asarray(hist, dtype=np.float32)
    e = np.asarray(edges, dtype=np.float32)
    centers = (e[1:] + e[:-1]) / 2
    bound = np.float32(2 ** (num_bits - 1) - 1)
    best, best_amax = np.inf, float(centers[-1])
    for i in range(start_bin, len(centers)):
        amax = centers[i]
        scale = bound / amax
        q = np.clip(np.round(centers * scale), -bound, bound) / scale
        mse = float(((q - centers) ** 2 * counts).mean())
        if mse < best:
            best, best_amax = mse, float(amax)
    return best_amax


def compute_amax(stats: dict, method: str, percentile: float = 99.99) -> float:
    """stats: {'max': float, 'hist': counts, 'edges': bin edges} of one activation quantizer."""
    if method == "max":
        return float(stats["max"])
    hist = np.asarray(stats["hist"]).astype(np.int64)
    edges = np.asarray(stats["edges"], dtype=np.float64)
    if method == "percentile":
        return float(_compute_amax_percentile(hist, edges, percentile))
    if method == "entropy":
        return entropy_amax(hist, edges)
    if method == "mse":
        return mse_amax(hist, edges)
    raise ValueError(f"unknown calibrator {method!r}")
