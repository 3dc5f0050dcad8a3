"""Which input of a two-input Add is the conv branch: one rule shared by torch.fx graphs and ONNX files.

Walk back from both inputs to their lowest common ancestor and count the weighted layers on the way: the
input with more of them is the branch (left unquantized), the other the shortcut (quantized).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable


def ancestors(node: Hashable, parents: Callable[[Hashable], Iterable]) -> set:
    seen, stack = {node}, [node]
    while stack:
        for parent in parents(stack.pop()):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def split_residual(a, b, parents: Callable, position: Callable, weight: Callable[[Hashable], int]):
    """(branch, shortcut), or None when the inputs share no ancestor or are equally deep (not a residual)."""
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
        return None
    return (a, b) if da > db else (b, a)
