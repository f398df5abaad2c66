"""LightCompress (LLMC) `advanced_ptq` Wan checkpoints: fold the smoothing factors into the linears.

LLMC's SmoothQuant / AWQ for Wan (llmc/models/wan_t2v.py, wan2_2_t2v.py; FakeAffineLayerNorm in
llmc/compression/quantization/module_utils.py, weight = bias = 1 at first; scale_ln_fcs in
base_blockwise_quantization.py) divides the emulated norm affine by per-channel scales s and
multiplies the weight columns of the linears after it by s. LightX2V runs such a checkpoint as
(lightx2v/models/networks/wan/infer/transformer_infer.py, infer_self_attn / infer_ffn):

    m = LN(x) * ((1 + scale) * affine.weight) + shift * affine.bias

feeding `blocks.N.self_attn.{q,k,v}` (affine_norm1) and `blocks.N.ffn.0` (affine_norm3, LLMC's
diffusers name of the FFN norm). ComfyUI's Wan block has no such factors. With a = affine.weight =
affine.bias (= 1/s), W' @ (m0 * a) = (W' * a[None, :]) @ m0, so the factors are folded into the
weight columns (dequantize, scale, requantize in the file's format; float weights just scale) and
the affine tensors are dropped. Unequal weight and bias factors cannot be folded: that is an error.
"""
from __future__ import annotations

import re
from typing import Iterable, Optional

import torch
from torch import Tensor

from ..formats import QTensor, QuantFormat

AFFINE = re.compile(r"(.*?blocks\.\d+\.)affine_norm([13])\.weight")
SMOOTHED = {"1": ("self_attn.q", "self_attn.k", "self_attn.v"), "3": ("ffn.0",)}
_QUANT_DTYPES = (torch.int8, torch.uint8, torch.float8_e4m3fn)


def has_smoothing(keys: Iterable[str]) -> bool:
    """True when a state dict holds LLMC smoothing factors (`blocks.N.affine_norm1/3.weight`)."""
    return any(AFFINE.fullmatch(k) for k in keys)


def _scale_columns(sd: dict, base: str, a: Tensor, fmt: Optional[QuantFormat]) -> None:
    """Multiply the K columns of the layer `base` (its weight [N, K]) by a [K], in its stored format."""
    wkey = base + "weight"
    if wkey not in sd:
        raise ValueError(f"smoothing factors found but '{wkey}' is missing")
    w = sd[wkey]
    if w.dtype not in _QUANT_DTYPES:
        sd[wkey] = (w.float() * a).to(w.dtype)
        return
    if fmt is None:
        raise ValueError(f"'{wkey}' is quantized ({w.dtype}) but the checkpoint's format is unknown")
    g = sd.get(base + "weight_global_scale")
    wf = fmt.dequantize_weight(QTensor(w, sd[base + "weight_scale"], g), torch.float32) * a
    q = fmt.quantize_weight(wf)
    sd[wkey], sd[base + "weight_scale"] = q.data, q.scale.to(fmt.scale_dtype)
    if q.global_scale is not None:
        sd[base + "weight_global_scale"] = q.global_scale.float()


def fold_smoothing(sd: dict, fmt: Optional[QuantFormat]) -> dict:
    """A copy of sd with every `affine_norm1/3` folded into its linears and removed (see module doc).

    fmt: the format of the checkpoint's quantized weights (None for a float checkpoint).
    """
    out = dict(sd)
    for key in [k for k in sd if AFFINE.fullmatch(k)]:
        block, norm = AFFINE.fullmatch(key).groups()
        a = out.pop(key).float()
        bias_key = f"{block}affine_norm{norm}.bias"
        b = out.pop(bias_key, None)
        if b is not None and not torch.allclose(b.float(), a, rtol=1e-3, atol=1e-6):
            raise ValueError(f"'{key}' and '{bias_key}' differ: LightX2V scales the norm and its shift by "
                             "different factors, which cannot be folded into the linear weights")
        for layer in SMOOTHED[norm]:
            _scale_columns(out, f"{block}{layer}.", a, fmt)
    return out


__all__ = ["SMOOTHED", "fold_smoothing", "has_smoothing"]
