"""nvfp4: e2m1 elements packed two per byte, one e4m3 scale per 16 along K, one fp32 global scale.

Weight [N, K] and activation [M, K] alike: data uint8 [rows, K/2] (element 2i in the low nibble,
2i+1 in the high nibble; nibble = sign<<3 | e2m1 code), scale float8_e4m3fn [rows, K/16],
global_scale fp32 scalar = absmax / (448 * 6). Value = e2m1 * scale * global_scale.
"""
import torch

from .base import E2M1_MAX, E4M3_MAX, TINY, QuantFormat, QTensor, as_rows, cast_e4m3, group_view

GROUP = 16
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


def encode_e2m1(x: torch.Tensor) -> torch.Tensor:
    """Float -> 4-bit codes (uint8 0..15), round to nearest, ties to the even code, saturating at 6."""
    mags = x.abs().clamp(max=E2M1_MAX)
    mids = torch.tensor(_MIDPOINTS, device=x.device, dtype=mags.dtype)
    lo = torch.bucketize(mags, mids, right=False)
    hi = torch.bucketize(mags, mids, right=True)
    code = torch.where(lo == hi, lo, lo + (lo % 2))
    return code.to(torch.uint8) | ((x < 0).to(torch.uint8) << 3)


def decode_e2m1(codes: torch.Tensor) -> torch.Tensor:
    """4-bit codes -> fp32 values."""
    table = torch.tensor(E2M1_VALUES, device=codes.device)
    mag = table[(codes & 7).long()]
    return torch.where((codes & 8) != 0, -mag, mag)


def pack(codes: torch.Tensor) -> torch.Tensor:
    """[rows, K] nibbles -> [rows, K/2] bytes."""
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """[rows, K/2] bytes -> [rows, K] nibbles."""
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).reshape(packed.shape[0], -1)


def quantize(x: torch.Tensor) -> QTensor:
    """[rows, K] float -> packed uint8 [rows, K/2] + e4m3 scale [rows, K/16] + fp32 global scale."""
    xf = as_rows(x)
    FORMAT.check_k(xf.shape[1])
    global_scale = (xf.abs().amax().clamp(min=TINY) / (E4M3_MAX * E2M1_MAX)).reshape(())
    g = group_view(xf, GROUP)
    block = cast_e4m3(g.abs().amax(dim=2) / E2M1_MAX / global_scale)
    denom = (block.float() * global_scale).clamp(min=TINY)
    codes = encode_e2m1(g / denom[..., None]).reshape(xf.shape)
    return QTensor(pack(codes), block, global_scale)


def dequantize(q: QTensor, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of quantize."""
    vals = group_view(decode_e2m1(unpack(q.data)), GROUP)
    scale = q.scale.float() * q.global_scale.float()
    return (vals * scale[..., None]).reshape(vals.shape[0], -1).to(dtype)


FORMAT = QuantFormat(
    name="nvfp4",
    weight_dtype=torch.uint8,
    weight_granularity="group16",
    act_granularity="group16",
    k_multiple=GROUP,
    quantize_weight=quantize,
    quantize_activation=quantize,
    dequantize_weight=dequantize,
    dequantize_activation=dequantize,
    weight_scale_shape=lambda n, k: (n, k // GROUP),
    packed_k=lambda k: k // 2,
    min_sm=(10, 0),
    scale_dtype=torch.float8_e4m3fn,
    has_global_scale=True,
)
