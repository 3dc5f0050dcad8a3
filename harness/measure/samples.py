"""Every cell's raw per-query latencies, kept beside its row so `report compare` can test them, not summaries.

One small Parquet file per cell (float32 milliseconds and the repeat each came from): a few KB to a few hundred.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.fileio import atomic_write

FOLDER = "samples"


def write_samples(root: Path, cid: str, runs: list[np.ndarray]) -> str:
    """Write the runs under root/samples/; returns the path relative to root, as the row keeps it."""
    rel = f"{FOLDER}/{cid}.parquet"
    frame = pd.DataFrame({"repeat": np.repeat(np.arange(len(runs), dtype=np.int16), [len(r) for r in runs]),
                          "latency_ms": np.concatenate(runs).astype(np.float32)})
    atomic_write(Path(root) / rel, lambda tmp: frame.to_parquet(tmp, index=False))
    return rel


def read_samples(path) -> np.ndarray | None:
    """The per-query latencies (ms) of a cell's sample file; None when the row kept none."""
    if not isinstance(path, str) or not path:
        return None
    try:
        return pd.read_parquet(path, columns=["latency_ms"])["latency_ms"].to_numpy(np.float64)
    except (OSError, ValueError, KeyError) as exc:
        raise HarnessError(f"{path}: cannot read the latency samples ({exc}); re-run the sweep or give the "
                           "results folder that holds samples/") from exc
