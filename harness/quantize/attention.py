"""Attention with its projections as Linear modules and its two MatMuls explicit, so both can be quantized.

nn.MultiheadAttention hands its in_proj_weight to F.multi_head_attention_forward and torchvision's Swin passes
qkv.weight / proj.weight to a functional: neither projection runs through a Linear module, so no quantized
Linear can replace it. The modules here compute the same function with `in_proj`/`qkv` and `out_proj`/`proj`
called as modules (Q/K/V and output projections: per-tensor inputs, per-channel weights once the mode swaps
them) and `q @ k^T`, `softmax @ v` written out, each MatMul input behind a quantizer when
`quantize_attention_matmul` asks for it (else an Identity). LayerNorm, softmax and GELU stay in float. Converted
blocks are leaves for torch.fx (Swin's window logic is not traceable) and expose their input quantizer through
`input_slots`, so the tensor they read still gets one shared quantizer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2

from harness.quantize.blocks import QUANT_BLOCK
from harness.quantize.modules import activation_quantizer, input_slots, twin

SOFTMAX_SLOT = "softmax_quantizer"  # attention probabilities: calibrated with max (harness.quantize.calibrate)
MATMUL_SLOTS = ("q_quantizer", "k_quantizer", SOFTMAX_SLOT, "v_quantizer")


class _AttentionMatmuls:
    """The two attention MatMuls with a quantizer (or an Identity) on each input."""

    def _add_matmul_quantizers(self, enabled: bool) -> None:
        for attr in MATMUL_SLOTS:
            setattr(self, attr, activation_quantizer() if enabled else nn.Identity())

    def _scores(self, q, k):
        return self.q_quantizer(q) @ self.k_quantizer(k.transpose(-2, -1))  # Q/DQ right at the MatMul

    def _mix(self, probs, v):
        return self.softmax_quantizer(probs) @ self.v_quantizer(v)


class ExplicitMultiheadAttention(_AttentionMatmuls, nn.Module):
    """nn.MultiheadAttention (same parameters, same outputs) with `in_proj` and `out_proj` as Linear modules."""

    def __init__(self, mha: nn.MultiheadAttention, quantize_matmul: bool):
        super().__init__()
        e = mha.embed_dim
        self.embed_dim, self.num_heads, self.batch_first = e, mha.num_heads, mha.batch_first
        self.dropout = mha.dropout
        self.in_proj = nn.Linear(e, 3 * e, bias=mha.in_proj_bias is not None, device="meta")
        self.in_proj.weight = mha.in_proj_weight
        self.in_proj.bias = mha.in_proj_bias
        self.out_proj = twin(mha.out_proj, nn.Linear)  # NonDynamicallyQuantizableLinear -> plain Linear
        self._add_matmul_quantizers(quantize_matmul)

    def input_slots(self, index: int) -> list[tuple[nn.Module, str]]:
        return input_slots(self.in_proj) if index < 3 else []

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):  # is_causal: a hint about attn_mask, as in PyTorch
        self_attention = key is query and value is query
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        if not self.batch_first or unbatched:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        e, h = self.embed_dim, self.num_heads
        if self_attention:
            q, k, v = self.in_proj(query).chunk(3, dim=-1)
        else:  # cross-attention: one projection, three inputs (so one input scale)
            q, k, v = (self.in_proj(t)[..., i * e:(i + 1) * e] for i, t in enumerate((query, key, value)))
        batch, length, source = q.shape[0], q.shape[1], k.shape[1]
        q, k, v = (t.reshape(batch, n, h, e // h).transpose(1, 2) for t, n in ((q, length), (k, source), (v, source)))
        scores = self._scores(q * (e // h) ** -0.5, k)
        mask = _additive_mask(attn_mask, key_padding_mask, batch, h, length, source, scores.dtype)
        if mask is not None:
            scores = scores + mask
        probs = F.dropout(F.softmax(scores, dim=-1), p=self.dropout, training=self.training)
        out = self.out_proj(self._mix(probs, v).transpose(1, 2).reshape(batch, length, e))
        if not self.batch_first or unbatched:
            out = out.transpose(0, 1)
        if unbatched:
            out, probs = out.squeeze(1), probs.squeeze(0)
        if not need_weights:
            return out, None
        return out, probs.mean(dim=-3) if average_attn_weights else probs


def _additive_mask(attn_mask, key_padding_mask, batch, heads, length, source, dtype):
    """nn.MultiheadAttention's masks (bool: True = masked out; float: added) as one additive mask."""
    mask = None
    if attn_mask is not None:
        mask = _additive(attn_mask, dtype)
        mask = mask.reshape(batch, heads, length, source) if mask.dim() == 3 else mask
    if key_padding_mask is not None:
        padding = _additive(key_padding_mask, dtype).reshape(batch, 1, 1, source)
        mask = padding if mask is None else mask + padding
    return mask


def _additive(mask, dtype):
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


class _WindowAttention(_AttentionMatmuls):
    """torchvision's shifted_window_attention (v1 and v2) with qkv/proj called as modules."""

    def input_slots(self, index: int) -> list[tuple[nn.Module, str]]:
        return input_slots(self.qkv) if index == 0 else []

    def forward(self, x):
        bias = self.get_relative_position_bias()
        batch, height, width, c = x.shape
        wh, ww = self.window_size
        x = F.pad(x, (0, 0, 0, (ww - width % ww) % ww, 0, (wh - height % wh) % wh))
        _, ph, pw, _ = x.shape
        shift = [0 if wh >= ph else self.shift_size[0], 0 if ww >= pw else self.shift_size[1]]
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = (ph // wh) * (pw // ww)
        x = x.view(batch, ph // wh, wh, pw // ww, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(batch * windows, wh * ww, c)
        heads = self.num_heads
        qkv = self.qkv(x).reshape(x.size(0), x.size(1), 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if getattr(self, "logit_scale", None) is not None:  # v2: cosine attention
            scores = self._scores(F.normalize(q, dim=-1), F.normalize(k, dim=-1))
            scores = scores * torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        else:
            scores = self._scores(q * (c // heads) ** -0.5, k)
        scores = scores + bias
        if sum(shift) > 0:
            mask = _shift_mask(x, ph, pw, self.window_size, shift)
            scores = scores.view(x.size(0) // windows, windows, heads, x.size(1), x.size(1))
            scores = scores + mask.unsqueeze(1).unsqueeze(0)
            scores = scores.view(-1, heads, x.size(1), x.size(1))
        probs = F.dropout(F.softmax(scores, dim=-1), p=self.attention_dropout, training=self.training)
        x = self._mix(probs, v).transpose(1, 2).reshape(x.size(0), x.size(1), c)
        x = F.dropout(self.proj(x), p=self.dropout, training=self.training)
        x = x.view(batch, ph // wh, pw // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(batch, ph, pw, c)
        if sum(shift) > 0:
            x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
        return x[:, :height, :width, :].contiguous()


def _shift_mask(x, ph, pw, window, shift):
    """-100 between tokens of a shifted window that come from different regions (torchvision's mask)."""
    mask = x.new_zeros((ph, pw))
    count = 0
    for h in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for w in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            mask[h[0]:h[1], w[0]:w[1]] = count
            count += 1
    mask = mask.view(ph // window[0], window[0], pw // window[1], window[1]).permute(0, 2, 1, 3)
    mask = mask.reshape((ph // window[0]) * (pw // window[1]), window[0] * window[1])
    mask = mask.unsqueeze(1) - mask.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class ExplicitWindowAttention(_WindowAttention, ShiftedWindowAttention):
    pass


class ExplicitWindowAttentionV2(_WindowAttention, ShiftedWindowAttentionV2):
    pass


class _ConstantLinear(nn.Linear):
    """A Linear that only ever reads a constant table (Swin v2's position-bias MLP): no quantized twin."""


def _window_attention(module: nn.Module, quantize_matmul: bool) -> nn.Module:
    cls = ExplicitWindowAttentionV2 if isinstance(module, ShiftedWindowAttentionV2) else ExplicitWindowAttention
    q = twin(module, cls)
    q._add_matmul_quantizers(quantize_matmul)
    if cls is ExplicitWindowAttentionV2:
        for i, layer in enumerate(q.cpb_mlp):
            if type(layer) is nn.Linear:
                q.cpb_mlp[i] = twin(layer, _ConstantLinear)
        if q.qkv.bias is not None:  # v2 ignores the key bias (upstream zeroes a copy on every call)
            with torch.no_grad():
                e = q.qkv.bias.numel() // 3
                q.qkv.bias[e:2 * e].zero_()
    return q


def _multihead_attention(module: nn.MultiheadAttention, quantize_matmul: bool) -> nn.Module | None:
    if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
        return None
    return ExplicitMultiheadAttention(module, quantize_matmul)


_CONVERTERS = {nn.MultiheadAttention: _multihead_attention, ShiftedWindowAttention: _window_attention,
               ShiftedWindowAttentionV2: _window_attention}


def convert_attention(model: nn.Module, quantize_matmul: bool = False, log=None) -> nn.Module:
    """Replace every attention block above (the root included) by its explicit twin; weights are shared."""
    convert = _CONVERTERS.get(type(model))
    if convert is not None:
        block = convert(model, quantize_matmul)
        if block is None:
            if log:
                log(f"warning: {type(model).__name__} with separate key/value sizes, bias_k or add_zero_attn is "
                    "left as is: its projections stay in float")
            return model
        setattr(block, QUANT_BLOCK, True)
        return block
    for name, child in list(model.named_children()):
        setattr(model, name, convert_attention(child, quantize_matmul, log))
    return model
