"""amax from one collected |x| histogram, for every histogram calibrator.

percentile is pytorch-quantization's own. entropy and mse give the same answers as its `_compute_amax_entropy`
and `_compute_amax_mse` (tests compare them), without their Python loop over every candidate amax (upstream
re-quantizes the histogram once per candidate bin: a third of a second per quantizer for entropy, and mse calls
.cuda()): entropy scores every candidate at once from prefix sums, mse in blocks of candidates.
"""

from __future__ import annotations

import numpy as np
from pytorch_quantization.calib.histogram import _compute_amax_percentile

NUM_BITS, START_BIN = 8, 128
TIE = 1e-12  # KL divergences this close are a tie, which goes to the larger amax as upstream's "last argmin"


def entropy_amax(hist: np.ndarray, edges: np.ndarray, num_bits: int = NUM_BITS, start_bin: int = START_BIN) -> float:
    """The clipping edge whose 128-level re-quantized histogram has the least KL divergence from the data.

    Candidate i keeps bins [0, i) (the rest folded into the last), and merges them into 128 groups, bin j into
    group j * 128 // i, each non-empty bin taking its group's mean. With p the normalised histogram, P its prefix
    sums and A the prefix sums of p log p, every candidate's KL(p || q) is A[i-1] - sum_g S'_g log(mean_g)
    + P[i-1] log Q plus the folded last bin's own term, where S'_g is group g's mass without the last bin and Q =
    P[i]: a few array operations over all candidates instead of a loop.
    """
    bins = np.array(hist, dtype=np.float64)
    bins[0] = bins[1]
    levels = 1 << (num_bits - 1)
    p = bins / bins.sum()
    nonzero = p > 0
    plogp = np.zeros_like(p)
    plogp[nonzero] = p[nonzero] * np.log(p[nonzero])
    a = np.concatenate([[0.0], np.cumsum(plogp)])
    mass = np.concatenate([[0.0], np.cumsum(p)])
    filled = np.concatenate([[0], np.cumsum(nonzero)])
    i = np.arange(start_bin, len(p) + 1)
    # group g of candidate i starts at bin ceil(g * i / levels); the last "start" is i itself
    starts = (np.arange(levels + 1)[None, :] * i[:, None] + levels - 1) // levels
    sums = np.diff(mass[starts], axis=1)
    counts = np.diff(filled[starts], axis=1)
    mean = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    log_mean = np.log(mean, out=np.zeros_like(mean), where=mean > 0)
    last = p[i - 1]
    sums[:, -1] -= last  # the last bin is scored on its own, with the folded tail
    q = mass[i]
    with np.errstate(divide="ignore", invalid="ignore"):
        body = a[i - 1] - (sums * log_mean).sum(axis=1) + mass[i - 1] * np.log(q)
        p_last = last + (1.0 - q)
        q_last = np.where(last > 0, mean[:, -1], 0.0) / q
        fold = np.where(p_last > 0, np.where(q_last > 0, p_last * (np.log(p_last) - np.log(q_last)), np.inf), 0.0)
    kl = np.where(q > 0, body + fold, np.inf)
    best = kl.min()
    return float(edges[i[np.flatnonzero(kl <= best + TIE + 1e-9 * abs(best))[-1]]])


def mse_amax(hist: np.ndarray, edges: np.ndarray, num_bits: int = NUM_BITS, start_bin: int = START_BIN,
             block: int = 256) -> float:
    """The bin centre that, as amax, minimises the histogram-weighted squared quantization error (float32, as
    upstream; `block` candidates at a time bound the memory)."""
    counts = np.asarray(hist, dtype=np.float32)
    e = np.asarray(edges, dtype=np.float32)
    centers = (e[1:] + e[:-1]) / 2
    bound = np.float32(2 ** (num_bits - 1) - 1)
    errors = []
    for lo in range(start_bin, len(centers), block):
        scale = bound / centers[lo : lo + block, None]
        q = np.clip(np.round(centers[None, :] * scale), -bound, bound) / scale
        errors.append(((q - centers[None, :]) ** 2 * counts[None, :]).mean(axis=1))
    if not errors:
        return float(centers[-1])
    return float(centers[start_bin + int(np.argmin(np.concatenate(errors)))])


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
