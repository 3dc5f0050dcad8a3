"""The built-in case where naive INT8 really hurts: digits-resnet with one outlier channel, same function in float.

One channel of layer2's first BatchNorm is scaled up by OUTLIER_SCALE and the weights that read it in layer2.conv2
are scaled down by as much. ReLU commutes with a positive scale, so the float model computes what the bundled one
does; but a max-calibrated activation quantizer on layer2.conv2's input now spends its 8 bits on that one channel
and rounds every other channel to a few levels, and the per-channel weight scale of that layer flattens the tiny
weights. Outliers like this are what trained networks grow (and what calibrators other than max are for).
"""

from __future__ import annotations

from pathlib import Path

OUTLIER_LAYER, OUTLIER_CHANNEL, OUTLIER_SCALE = "layer2.conv2", 3, 1000.0


def outlier_state_dict() -> dict:
    import torch

    from harness.models.registry import load_model, resolve_model

    state = {k: v.clone() for k, v in load_model(resolve_model("digits-resnet")).state_dict().items()}
    c, k = OUTLIER_CHANNEL, OUTLIER_SCALE
    state["layer2.bn1.weight"][c] *= k
    state["layer2.bn1.bias"][c] *= k
    with torch.no_grad():
        state[f"{OUTLIER_LAYER}.weight"][:, c] /= k
    return state


def write_outlier_weights(path: Path) -> Path:
    import torch

    from harness.fileio import atomic_write

    path = Path(path)
    atomic_write(path, lambda tmp: torch.save(outlier_state_dict(), tmp))
    return path
