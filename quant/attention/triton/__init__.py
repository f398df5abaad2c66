"""The pack's own quantized attention (Triton, SageAttention-2 style), non-causal, no mask.

Q per token and K (minus its per-channel mean over the keys) per key block in int8, scores in fp32 and
the online softmax in the exp2 domain; P and V in e4m3 (V per channel), or, with accurate=True, P and V
in the input dtype. Q/K/V are quantized by a Triton pre-pass (quantize.py) that reads the [B, H, L, D]
inputs through their strides (no torch copies); the main kernel is kernel.py, its launch configs
configs.py; on sm90 both modes at head dim 128 run the warp-specialized Gluon kernel hopper.py instead.
Importing this package never fails: without Triton, `unsupported_reason` says so.
Under torch.compile the kernel is the custom op `comfyui_quantized::quantized_attention` (one opaque graph
node: dynamo never traces the Triton launches and their TMA descriptors); eager calls skip the op's dispatch.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Optional

import torch
from torch import Tensor

try:
    import triton
    from triton.tools.tensor_descriptor import TensorDescriptor  # noqa: F401  (Triton >= 3.4)
except ImportError:  # pragma: no cover - depends on the install
    triton = None

HEAD_DIMS = (64, 96, 128)
DTYPES = (torch.bfloat16, torch.float16)
MIN_CC = (9, 0)  # TMA descriptors and e4m3 tensor cores


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def unsupported_reason(q: Tensor, k: Tensor, v: Tensor) -> Optional[str]:
    """None when quantized_attention can run these inputs ([B,H,L,D]), else a short reason (no Triton, not
    CUDA and no TRITON_INTERPRET, head dim, dtype, ...)."""
    if triton is None:
        return "triton is not installed (or older than 3.4: no host TMA descriptors)"
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        return "inputs must be [B, H, L, D]"
    if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        return f"shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if q.shape[3] not in HEAD_DIMS:
        return f"head dim {q.shape[3]} (supported: {HEAD_DIMS})"
    if q.dtype not in DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        return f"dtypes {q.dtype}/{k.dtype}/{v.dtype} (supported: bf16 or fp16, all the same)"
    if min(q.shape[2], k.shape[2]) == 0:
        return "empty sequence"
    if not (q.device == k.device == v.device):
        return "q, k and v on different devices"
    if q.device.type != "cuda":
        return None if _interpreted() else f"not a CUDA tensor ({q.device.type}) and TRITON_INTERPRET unset"
    if torch.cuda.get_device_capability(q.device) < MIN_CC:
        return f"needs compute capability >= {MIN_CC[0]}.{MIN_CC[1]} (TMA, e4m3 tensor cores)"
    return None


_HOPPER: dict = {}  # the Gluon kernel: "module" (or None), "reason" it cannot run (or None), "ran" once


def hopper_reason(q: Tensor, k: Tensor, accurate: bool) -> Optional[str]:
    """None when the warp-specialized Hopper kernel (hopper.py, both modes) runs this call, else why the Triton
    kernel does: not an sm90 GPU, head dim, fewer than two key tiles, or Gluon missing / Triton older than the one
    it was built for."""
    if q.device.type != "cuda" or _interpreted() or torch.cuda.get_device_capability(q.device) != (9, 0):
        return "not an sm90 GPU"
    if not _HOPPER:
        try:
            from . import hopper
            _HOPPER.update(module=hopper, reason=hopper.version_reason(), ran=False)
        except (ImportError, AttributeError) as e:  # no Gluon, or one without the names the kernel uses
            _HOPPER.update(module=None, reason=f"triton.experimental.gluon does not import ({e})", ran=False)
    return _HOPPER["reason"] or _HOPPER["module"].shape_reason(q.shape[3], k.shape[2])


def triton_kernel(q: Tensor, k: Tensor, v: Tensor, scale: float, accurate: bool) -> Tensor:
    """kernel.py (the Triton kernel) with its config for this GPU generation, on checked inputs: what runs where
    the Hopper kernel does not (the benches and GPU tests also call it where it does, to compare)."""
    from . import configs, kernel

    cc_major = torch.cuda.get_device_capability(q.device)[0] if q.device.type == "cuda" else 9
    return kernel.attention(q, k, v, scale, accurate, configs.pick(cc_major, triton.next_power_of_2(q.shape[3]),
                                                                   accurate))


def _attention(q: Tensor, k: Tensor, v: Tensor, scale: float, accurate: bool) -> Tensor:
    """The kernel on checked inputs (see quantized_attention): hopper.py where hopper_reason allows, else
    triton_kernel."""
    on_gpu = torch.cuda.device(q.device) if q.device.type == "cuda" else contextlib.nullcontext()
    with on_gpu:
        if hopper_reason(q, k, accurate) is None:
            try:
                out = _HOPPER["module"].attention(q, k, v, scale, accurate)
                _HOPPER["ran"] = True
                return out
            except (triton.CompilationError, RuntimeError) as e:
                if _HOPPER["ran"] or isinstance(e, torch.OutOfMemoryError):
                    raise  # it compiled and ran before: a real error
                _HOPPER["reason"] = f"the Gluon kernel did not compile on triton {triton.__version__}: {e}"
                logging.warning("comfyui-quantized: %s; the Triton attention kernel runs instead", _HOPPER["reason"])
        return triton_kernel(q, k, v, scale, accurate)


_attention_op = torch.library.custom_op("comfyui_quantized::quantized_attention", _attention, mutates_args=())


@_attention_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, scale: float, accurate: bool) -> Tensor:
    b, h, lq, d = q.shape
    return q.new_empty((b, lq, h, d)).transpose(1, 2)


def quantized_attention(q: Tensor, k: Tensor, v: Tensor, *, scale: Optional[float] = None,
                        accurate: bool = False) -> Tensor:
    """q [B,H,Lq,D], k/v [B,H,Lk,D] -> [B,H,Lq,D] in q.dtype (storage [B,Lq,H,D])."""
    reason = unsupported_reason(q, k, v)
    if reason is not None:
        raise ValueError(f"quantized_attention: {reason}")
    scale = q.shape[3] ** -0.5 if scale is None else float(scale)
    if torch.compiler.is_compiling():
        return _attention_op(q, k, v, scale, accurate)
    return _attention(q, k, v, scale, accurate)
