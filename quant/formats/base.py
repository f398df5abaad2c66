"""Shared pieces of every number format: the quantized-tensor container and the scale helpers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

INT8_MAX = 127.0
E4M3_MAX = 448.0
E2M1_MAX = 6.0
TINY = 1e-12


@dataclass
class QTensor:
    """A quantized 2-D matrix [rows, K] as stored and fed to kernels.

    data: int8 / float8_e4m3fn [rows, K], or uint8 [rows, K/2] for nvfp4 (two e2m1 per byte).
    scale: fp32 (int8, fp8, block-128), uint8 e8m0 exponents (mxfp8) or float8_e4m3fn (nvfp4);
        its shape depends on the format's granularity (see each format module).
    global_scale: fp32 scalar tensor multiplying every block scale (nvfp4 only).
    """

    data: Tensor
    scale: Tensor
    global_scale: Optional[Tensor] = None

    def to(self, device: torch.device | str) -> "QTensor":
        """The same tensors on `device` (each returned as is when already there)."""
        gs = None if self.global_scale is None else self.global_scale.to(device)
        return QTensor(self.data.to(device), self.scale.to(device), gs)


@dataclass(frozen=True)
class QuantFormat:
    """One number format: how weights [N, K] and activations [M, K] are quantized and restored.

    weight_granularity / act_granularity name the scale blocks ("channel", "token",
    "block128x128", "group128", "group32", "group16"). k_multiple: K must be a multiple of it.
    min_sm: the first GPU generation with tensor cores for this format (emulated below it).
    scale_dtype: storage dtype of `weight_scale`; has_global_scale: a `weight_global_scale` fp32 scalar
    multiplies every block scale (nvfp4).
    """

    name: str
    weight_dtype: torch.dtype
    weight_granularity: str
    act_granularity: str
    k_multiple: int
    quantize_weight: Callable[[Tensor], QTensor]
    quantize_activation: Callable[[Tensor], QTensor]
    dequantize_weight: Callable[[QTensor, torch.dtype], Tensor]
    dequantize_activation: Callable[[QTensor, torch.dtype], Tensor]
    weight_scale_shape: Callable[[int, int], tuple]
    min_sm: tuple[int, int]
    packed_k: Callable[[int], int] = lambda k: k
    scale_dtype: torch.dtype = torch.float32
    has_global_scale: bool = False

    def check_k(self, k: int, what: str = "K") -> None:
        """Raise a clear error when the reduction dim does not fit the format's blocks."""
        if k % self.k_multiple:
            raise ValueError(
                f"{self.name}: {what} = {k} is not divisible by the block size {self.k_multiple}; "
                f"use a per-channel format (int8, fp8) for this layer")


def ceil_div(a: int, b: int) -> int:
    """ceil(a / b) for non-negative ints (number of blocks of b covering a)."""
    return -(-a // b)


def round_up(a: int, b: int) -> int:
    """a rounded up to a multiple of b (padded sizes and offsets)."""
    return ceil_div(a, b) * b


def check_finite(t: Tensor, name: str) -> None:
    """Refuse NaN/Inf before quantizing: absmax scales would silently poison a whole row."""
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).sum().item()
        raise ValueError(f"tensor '{name}' holds {bad} NaN/Inf value(s); refusing to quantize it")


def as_rows(x: Tensor) -> Tensor:
    """Float32 2-D view [rows, K] of x (for quantizers: all math in fp32)."""
    if x.dim() != 2:
        raise ValueError(f"expected a 2-D [rows, K] tensor, got shape {tuple(x.shape)}")
    return x.float()


def rowwise_absmax_quantize(x: Tensor, qmax: float, dtype: torch.dtype) -> QTensor:
    """Symmetric per-row quantization [rows, K] -> data [rows, K], scale fp32 [rows, 1] = absmax / qmax."""
    xf = as_rows(x)
    scale = xf.abs().amax(dim=1, keepdim=True).clamp(min=TINY) / qmax
    q = xf / scale
    if dtype == torch.int8:
        q.round_()
    return QTensor(q.clamp_(-qmax, qmax).to(dtype), scale)


def rowwise_dequantize(q: QTensor, dtype: torch.dtype) -> Tensor:
    """Inverse of rowwise_absmax_quantize."""
    return (q.data.float() * q.scale.float()).to(dtype)


def group_view(x: Tensor, group: int) -> Tensor:
    """[rows, K] -> [rows, K/group, group]; K must be a multiple of group."""
    rows, k = x.shape
    return x.reshape(rows, k // group, group)


def cast_e4m3(x: Tensor) -> Tensor:
    """Saturating cast to float8_e4m3fn (plain .to() turns out-of-range values into NaN)."""
    return x.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


def rowwise_format(name: str, dtype: torch.dtype, qmax: float, min_sm: tuple[int, int]) -> QuantFormat:
    """A per-output-channel weight / per-token activation format (int8, fp8): scale = absmax / qmax, [rows, 1]."""
    def quantize(x: Tensor) -> QTensor:
        return rowwise_absmax_quantize(x, qmax, dtype)

    return QuantFormat(
        name=name,
        weight_dtype=dtype,
        weight_granularity="channel",
        act_granularity="token",
        k_multiple=1,
        quantize_weight=quantize,
        quantize_activation=quantize,
        dequantize_weight=rowwise_dequantize,
        dequantize_activation=rowwise_dequantize,
        weight_scale_shape=lambda n, k: (n, 1),
        min_sm=min_sm,
    )
