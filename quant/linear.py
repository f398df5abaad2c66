"""The quantized linear: packed weight + scales, forward = dynamic activation quantization + GEMM.

Storage (the state-dict keys, LightX2V / ComfyUI names): `weight` [N, K] in the format's storage
dtype (nvfp4: uint8 [N, K/2]), `weight_scale` (layout per format, see quant/formats),
`weight_global_scale` (nvfp4 only), `bias` [N] in the compute dtype. A float `weight` in a state
dict is quantized while loading, one tensor at a time.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .formats import QuantFormat, QTensor, check_finite
from .kernels import run_linear

def quantized_linear(x: Tensor, w: QTensor, bias: Optional[Tensor], fmt: QuantFormat, kernel: str) -> Tensor:
    """y = x @ dequant(w).T + bias for x [..., K] (any leading dims, any strides) -> [..., N] in x.dtype."""
    if x.numel() == 0:
        return x.new_zeros(*x.shape[:-1], w.data.shape[0])
    return run_linear(kernel, x, w, bias, fmt)


def _frozen(t: Tensor) -> nn.Parameter:
    return nn.Parameter(t, requires_grad=False)


class QuantLinear(nn.Module):
    """nn.Linear replacement holding a quantized weight (see module docstring for the layout)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, fmt: QuantFormat,
                 kernel: str, device=None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        fmt.check_k(in_features, "in_features")
        self.in_features, self.out_features = in_features, out_features
        self.fmt, self.kernel = fmt, kernel
        self.weight = _frozen(torch.empty(out_features, fmt.packed_k(in_features), dtype=fmt.weight_dtype, device=device))
        self.weight_scale = _frozen(torch.empty(fmt.weight_scale_shape(out_features, in_features),
                                                dtype=fmt.scale_dtype, device=device))
        if fmt.has_global_scale:
            self.weight_global_scale = _frozen(torch.empty((), dtype=torch.float32, device=device))
        else:
            self.weight_global_scale = None
        self.bias = _frozen(torch.empty(out_features, dtype=dtype or torch.float32, device=device)) if bias else None

    @classmethod
    def from_float(cls, linear: nn.Linear, fmt: QuantFormat, kernel: str, name: str = "weight") -> "QuantLinear":
        """Quantize an existing nn.Linear (weight [N, K]); bias kept in its dtype."""
        w = linear.weight.detach()
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, fmt=fmt, kernel=kernel,
                device=w.device, dtype=w.dtype)
        q.set_float_weight(w, name)
        if linear.bias is not None:
            q.bias.data = linear.bias.detach().clone()
        return q

    def qweight(self) -> QTensor:
        """The stored weight as a QTensor (no copy)."""
        return QTensor(self.weight, self.weight_scale, self.weight_global_scale)

    def dequantize_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """Float weight [N, K] (for LoRA patching and checks)."""
        return self.fmt.dequantize_weight(self.qweight(), dtype)

    def set_float_weight(self, w: Tensor, name: str = "weight") -> None:
        """Quantize a float weight [N, K] into this layer's storage (NaN/Inf refused, naming `name`)."""
        if tuple(w.shape) != (self.out_features, self.in_features):
            raise ValueError(f"'{name}' has shape {tuple(w.shape)}, expected {(self.out_features, self.in_features)}")
        q = quantize_float_weight(w, self.fmt, name)
        self.weight.data = q.data.to(self.weight.device)
        self.weight_scale.data = q.scale.to(self.weight.device)
        if q.global_scale is not None:
            self.weight_global_scale.data = q.global_scale.to(self.weight.device)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        normalize_state_dict(state_dict, prefix, self.fmt, self.in_features, self.out_features)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x: Tensor) -> Tensor:
        """y = x @ dequant(weight).T + bias; weight, scales and bias moved to x's device only when elsewhere."""
        w, bias, dev = self.qweight(), self.bias, x.device
        if self.weight.device != dev:
            w = w.to(dev)
        if bias is not None and bias.device != dev:
            bias = bias.to(dev)
        return quantized_linear(x, w, bias, self.fmt, self.kernel)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, format={self.fmt.name}, kernel={self.kernel}"


def quantize_float_weight(w: Tensor, fmt: QuantFormat, name: str, device: torch.device | str | None = None,
                          keep: bool = False) -> QTensor:
    """Quantize one float weight [N, K] on `device` (e.g. the GPU; None: where it lies), NaN/Inf refused naming
    `name`. Codes, scales (in the format's scale dtype) and global scale come back to w's own device, or stay
    on `device` with `keep`."""
    home = w.device
    if device is not None:
        w = w.to(device)
        home = w.device if keep else home
    check_finite(w, name)
    q = fmt.quantize_weight(w)
    gs = None if q.global_scale is None else q.global_scale.to(home, torch.float32)
    return QTensor(q.data.to(home), q.scale.to(home, fmt.scale_dtype), gs)


def normalize_state_dict(sd: dict, prefix: str, fmt: QuantFormat, k: int, n: int,
                         device: torch.device | str | None = None, keep: bool = False) -> None:
    """Bring one layer's entries of a state dict into QuantLinear's storage layout, in place.

    A float `weight` is quantized (NaN/Inf refused; on `device` when given, kept there with `keep`, see
    quantize_float_weight); a stored one is checked against the format (dtype, weight and scale shapes) with an
    error naming the tensor; scales become their storage dtype.
    """
    wkey, skey, gkey = prefix + "weight", prefix + "weight_scale", prefix + "weight_global_scale"
    if wkey not in sd:
        return
    w = sd[wkey]
    if w.is_floating_point() and w.dtype not in (torch.float8_e4m3fn, torch.float8_e5m2):
        if skey in sd:
            raise ValueError(f"'{wkey}' is {w.dtype} but '{skey}' is present: a float weight takes no scale")
        if tuple(w.shape) != (n, k):
            raise ValueError(f"'{wkey}' has shape {tuple(w.shape)}, expected {(n, k)}")
        q = quantize_float_weight(w, fmt, wkey, device, keep)
        sd[wkey], sd[skey] = q.data, q.scale
        if q.global_scale is not None:
            sd[gkey] = q.global_scale
        return
    if w.dtype != fmt.weight_dtype:
        raise ValueError(f"'{wkey}' is {w.dtype}; the {fmt.name} format stores {fmt.weight_dtype}")
    if tuple(w.shape) != (n, fmt.packed_k(k)):
        raise ValueError(f"'{wkey}' has shape {tuple(w.shape)}, expected {(n, fmt.packed_k(k))} for {fmt.name}")
    if skey not in sd:
        raise ValueError(f"'{wkey}' is quantized ({w.dtype}) but '{skey}' is missing")
    want = tuple(fmt.weight_scale_shape(n, k))
    s = sd[skey]
    if s.numel() != math.prod(want) or (s.dim() == len(want) and tuple(s.shape) != want):
        raise ValueError(f"'{skey}' has shape {tuple(s.shape)}, expected {want} for {fmt.name}")
    sdt = fmt.scale_dtype
    sd[skey] = s.view(torch.uint8).reshape(want) if sdt == torch.uint8 and s.dtype != torch.uint8 else s.to(sdt).reshape(want)
    if fmt.has_global_scale:
        if gkey not in sd:
            raise ValueError(f"'{wkey}' is nvfp4 but '{gkey}' is missing")
        sd[gkey] = sd[gkey].float().reshape(())
