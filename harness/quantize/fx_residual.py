"""Residual-aware placement for any torch.fx-traceable model, found from the graph, not from class names.

For each two-input Add, walk back from both inputs to their lowest common ancestor and count the weighted
layers on the way: the input with more of them is the conv branch (left unquantized), the other is the
shortcut (quantized); ties follow harness.quantize.residual_split. Then every tensor gets one quantizer shared
by all its quantized consumers; MaxPool, Concat and shape-only ops (view, permute, flatten, ...) tie their input
and output tensors together so both sides carry one scale.
"""

from __future__ import annotations

import operator

import torch
from pytorch_quantization.nn.modules._utils import QuantInputMixin, QuantMixin
from pytorch_quantization.nn.modules.tensor_quantizer import TensorQuantizer
from torch import fx, nn
from torch.nn.modules.conv import _ConvNd

from harness.quantize.blocks import QUANT_BLOCK, RESIDUAL_BLOCK
from harness.quantize.modules import (
    RESIDUAL_SLOTS,
    QuantConcat,
    QuantResidualAdd,
    float_quantizer,
    input_slots,
    share,
    slots,
)
from harness.quantize.residual_split import split_residual

_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_", "__add__", "__iadd__"}
_MAXPOOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
# Ops that only move or relabel values: a tensor and its reshaped views carry one scale.
_SHAPE_METHODS = {"view", "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze", "contiguous"}
_SHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze,
                    nn.functional.dropout}
_SHAPE_MODULES = (nn.Flatten, nn.Identity, nn.Dropout)
# ...and the activations TensorRT fuses into a Conv+Add: an Add's output reaches its reader through these.
_FUSED_METHODS = _SHAPE_METHODS | {"relu", "relu_"}
_FUSED_FUNCTIONS = _SHAPE_FUNCTIONS | {torch.relu, torch.relu_, nn.functional.relu, nn.functional.relu6}
_FUSED_MODULES = (*_SHAPE_MODULES, nn.ReLU, nn.ReLU6)


class _Tracer(fx.Tracer):
    """Quantized layers and converted blocks are leaves: their insides are already placed."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (isinstance(m, (QuantMixin, QuantInputMixin, TensorQuantizer)) or getattr(m, QUANT_BLOCK, False)
                or super().is_leaf_module(m, qualname))


def trace(model: nn.Module) -> fx.GraphModule:
    tracer = _Tracer()
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _weighted(gm: fx.GraphModule, node: fx.Node) -> int:
    m = _module(gm, node)
    return int(isinstance(m, QuantMixin) or bool(getattr(m, QUANT_BLOCK, False)))


def residual_inputs(gm: fx.GraphModule, node: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    """(branch, shortcut) when `node` is an Add of x and f(x), else None."""
    is_add = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in _ADD_METHODS)
    if not is_add or node.kwargs or len(node.args) != 2 or not all(isinstance(a, fx.Node) for a in node.args):
        return None
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    split = split_residual(*node.args, parents=lambda n: n.all_input_nodes, position=order.__getitem__,
                           weight=lambda n: _weighted(gm, n))
    return split[:2] if split else None


def _calls(gm: fx.GraphModule, node: fx.Node, methods, functions, modules) -> bool:
    """Whether `node` applies one of these ops to a tensor (its first argument)."""
    return ((node.op == "call_method" and node.target in methods)
            or (node.op == "call_function" and node.target in functions)
            or isinstance(_module(gm, node), modules)) and bool(node.args) and isinstance(node.args[0], fx.Node)


def _int8_reader(gm: fx.GraphModule, user: fx.Node, node: fx.Node) -> bool:
    """Whether `user` reads `node` through an enabled quantizer other than a residual shortcut's."""
    m = _module(gm, user)
    if m is None:
        return False
    args = [(0, t) for t in user.args[0]] if isinstance(m, QuantConcat) else enumerate(user.args)
    return any(attr not in RESIDUAL_SLOTS and not getattr(owner, attr)._disabled
               for index, arg in args if arg is node for owner, attr in input_slots(m, index))


def _layer_before(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The weighted layer (or converted block) a value comes from, walking back through ops with one data input
    (activations, BatchNorm, layer-scale Mul, permutes, stochastic depth); None where two values meet first."""
    while not _weighted(gm, node):
        data = [n for n in node.all_input_nodes if n.op != "get_attr"]
        if len(data) != 1:
            return None
        node = data[0]
    return _module(gm, node)


def _conv_fusion_site(gm: fx.GraphModule, node: fx.Node, m: nn.Module) -> bool:
    """Whether TensorRT can fuse this residual Add into a convolution: the branch comes from a conv (or is a
    converted conv block). After a Linear (ConvNeXt, transformers) there is no Conv+Add INT8 fusion to enable:
    TensorRT fuses residual Adds into convolutions, and Model Optimizer quantizes shortcuts on the same rule."""
    layer = m if getattr(m, RESIDUAL_BLOCK, False) else _layer_before(gm, node.args[0])  # args: (branch, shortcut)
    return isinstance(layer, _ConvNd) or bool(getattr(layer, RESIDUAL_BLOCK, False))


def residuals_feeding_int8(gm: fx.GraphModule) -> set[int]:
    """ids of the residual Adds and blocks whose output reaches an INT8 layer (through ReLU and shape-only ops):
    there TensorRT fuses the Add into the branch's last layer with an INT8 output, if the shortcut is INT8 too."""
    found = set()
    for node in gm.graph.nodes:
        m = _module(gm, node)
        if m is None or not any(attr in RESIDUAL_SLOTS for attr in slots(m)):
            continue
        stack, seen = [node], {node}
        while stack:
            current = stack.pop()
            if any(_int8_reader(gm, user, current) for user in current.users):
                found.add(id(m))
                break
            fresh = [u for u in current.users if u not in seen
                     and _calls(gm, u, _FUSED_METHODS, _FUSED_FUNCTIONS, _FUSED_MODULES)]
            seen.update(fresh)
            stack += fresh
    return found


def output_layers(gm: fx.GraphModule) -> list[str]:
    """The weighted layers (or converted blocks) whose output reaches the model output without passing another."""
    found: list[str] = []
    seen: set[fx.Node] = set()
    stack = [n for n in gm.graph.nodes if n.op == "output"]
    while stack:
        for parent in stack.pop().all_input_nodes:
            if parent in seen:
                continue
            seen.add(parent)
            if _weighted(gm, parent):
                found.append(str(parent.target))
            else:
                stack.append(parent)
    return found


def _scope(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack.values()))[0] if stack else ""


def _add_module(gm: fx.GraphModule, node: fx.Node, kind: str, module: nn.Module) -> str:
    scope = _scope(node)
    base = f"{scope}.{kind}" if scope else kind
    name, i = base, 1
    while _has(gm, name):
        name, i = f"{base}_{i}", i + 1
    gm.add_submodule(name, module)
    return name


def _has(gm: fx.GraphModule, name: str) -> bool:
    try:
        gm.get_submodule(name)
        return True
    except AttributeError:
        return False


def _rewrite(gm: fx.GraphModule) -> None:
    """Residual Adds -> QuantResidualAdd(branch, shortcut); torch.cat -> QuantConcat."""
    graph = gm.graph
    for node in list(graph.nodes):
        residual = residual_inputs(gm, node)
        is_cat = (node.op == "call_function" and node.target is torch.cat and node.args
                  and isinstance(node.args[0], (list, tuple)) and all(isinstance(t, fx.Node) for t in node.args[0]))
        if residual:
            target, args = _add_module(gm, node, "residual", QuantResidualAdd()), residual
        elif is_cat:
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            target, args = _add_module(gm, node, "concat", QuantConcat(dim)), (list(node.args[0]),)
        else:
            continue
        with graph.inserting_after(node):
            new = graph.call_module(target, args)
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)


def _share_by_tensor(gm: fx.GraphModule) -> None:
    """All quantized consumers of one tensor get one quantizer; MaxPool and Concat tie input and output. A residual
    Add that follows no conv gets no shortcut quantizer (the stream stays float)."""
    parent: dict[fx.Node, fx.Node] = {}

    def find(n):
        while parent.get(n, n) is not n:
            n = parent[n]
        return n

    def union(a, b):
        parent[find(a)] = find(b)

    for node in gm.graph.nodes:
        m = _module(gm, node)
        if isinstance(m, _MAXPOOLS) and isinstance(m, QuantInputMixin):
            union(node, node.args[0])
        elif isinstance(m, QuantConcat):
            for t in node.args[0]:
                union(t, node)
        elif _calls(gm, node, _SHAPE_METHODS, _SHAPE_FUNCTIONS, _SHAPE_MODULES):
            union(node, node.args[0])
    groups: dict[fx.Node, list] = {}
    for node in gm.graph.nodes:
        m = _module(gm, node)
        if m is None:
            continue
        if isinstance(m, QuantResidualAdd) and not _conv_fusion_site(gm, node, m):
            m.shortcut_quantizer = float_quantizer()  # no fusion to enable: the residual stream stays float
            continue
        inputs = [(0, t) for t in node.args[0]] if isinstance(m, QuantConcat) else enumerate(node.args)
        for index, arg in inputs:
            if isinstance(arg, fx.Node):
                group = groups.setdefault(find(arg), [])
                group += [s for s in input_slots(m, index) if s not in group]
    for group in groups.values():
        share(group)


def residual_aware(model: nn.Module) -> fx.GraphModule:
    """Trace (raises if the model is not traceable), quantize shortcuts and concats, share per tensor."""
    gm = trace(model)
    _rewrite(gm)
    gm.graph.lint()
    gm.recompile()
    _share_by_tensor(gm)
    return gm
