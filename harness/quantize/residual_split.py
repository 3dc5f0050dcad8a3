"""Which input of a two-input Add is the conv branch: one rule shared by torch.fx graphs and ONNX files.

Walk back from both inputs to their lowest common ancestor and count the weighted layers on the way: the
input with more of them is the branch (left unquantized, TensorRT fuses the Add into its last layer), the other
the shortcut (quantized). A tie with weighted layers on both sides (`conv3x3(x) + conv1x1(x)`, the second Add of
`x + f(x) + g(x)`) is decided by graph order: the input produced later is the branch, the earlier one the
shortcut, so exactly one input is quantized either way. Inputs with no weighted layer on either side, or with no
common ancestor, are not a residual Add.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import NamedTuple


class Split(NamedTuple):
    branch: Hashable
    shortcut: Hashable
    tie: bool  # both sides equally deep: which one is quantized is a convention, not a fusion constraint


def ancestors(node: Hashable, parents: Callable[[Hashable], Iterable]) -> set:
    seen, stack = {node}, [node]
    while stack:
        for parent in parents(stack.pop()):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def split_residual(a, b, parents: Callable, position: Callable, weight: Callable[[Hashable], int]) -> Split | None:
    """(branch, shortcut, tie), or None when the inputs share no ancestor or carry no weighted layer at all."""
    anc_a, anc_b = ancestors(a, parents), ancestors(b, parents)
    common = anc_a & anc_b
    if not common:
        return None
    lca = max(common, key=position)
    depth = {lca: 0}
    for n in sorted((anc_a | anc_b) - {lca}, key=position):
        reached = [depth[p] for p in parents(n) if p in depth]
        if reached:
            depth[n] = max(reached) + weight(n)
    da, db = depth.get(a, 0), depth.get(b, 0)
    if da == db:
        if da == 0:
            return None
        return Split(a, b, True) if position(a) > position(b) else Split(b, a, True)
    return Split(a, b, False) if da > db else Split(b, a, False)
