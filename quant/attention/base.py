"""What every attention-kernel module declares: name, what it runs, an availability probe, and its call.

Layout: a kernel's `run(q, k, v, scale)` takes q [B, H, Lq, D], k / v [B, H, Lk, D] (any strides, the
same H for all three) and returns [B, H, Lq, D] in q.dtype (any strides). `unsupported` says, per call,
why a kernel cannot take these inputs (the registry then runs SDPA and counts the reason).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from ..kernels.base import (
    UNAVAILABLE,
    Availability,
    cuda_probe,
    has_module,
    library_attr,
)

HALF = frozenset({torch.float16, torch.bfloat16})
# Keys below which the libraries' quantized kernels (fa3-fp8, sage1, kitchen-int8) take SDPA: they measured
# 0.48-0.55x SDPA on Wan's 512 text keys (H200, issue 16).
LIBRARY_MIN_KEYS = 1024

# run(q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, D], scale or None = D ** -0.5) -> [B, H, Lq, D] in q.dtype
RunFn = Callable[[Tensor, Tensor, Tensor, Optional[float]], Tensor]
# check(q, k, v) -> None when the library takes these inputs, else why not (a kernel's own extra rules)
CheckFn = Callable[[Tensor, Tensor, Tensor], Optional[str]]


@dataclass(frozen=True)
class AttentionKernel:
    """One attention kernel: its name (the dropdown value), what it is, how to install it, where it runs.

    head_dims: the head dims it takes (empty: any); dtypes: the input dtypes it takes; cuda_only: CPU tensors go
    to SDPA; quantized: low precision, so calls that ask for full precision (ComfyUI's
    low_precision_attention=False) go to SDPA; check: the library's own per-call rule. Calls with a mask
    always go to SDPA (no kernel here takes ComfyUI's masks).
    Speed rules (where the kernel was measured slower than SDPA, the call goes to SDPA): min_keys (key length,
    e.g. cross-attention to 512 text tokens), min_rows (B * H * Lq query rows), fast_head_dims (empty: all).
    """

    name: str
    description: str
    install_hint: str
    probe: Callable[[torch.device], Availability]
    run: RunFn
    head_dims: tuple[int, ...] = ()
    dtypes: frozenset = HALF
    cuda_only: bool = True
    quantized: bool = False
    check: Optional[CheckFn] = None
    min_keys: int = 0
    min_rows: int = 0
    fast_head_dims: tuple[int, ...] = ()

    def unsupported(self, q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None,
                    full_precision: bool = False) -> Optional[str]:
        """None when this kernel runs these [B, H, L, D] inputs, else a short reason (it names the fallback)."""
        if mask is not None:
            return "mask"
        if full_precision and self.quantized:
            return "full precision asked"
        if self.cuda_only and q.device.type != "cuda":
            return f"{q.device.type} tensors"
        if q.dtype not in self.dtypes or k.dtype != q.dtype or v.dtype != q.dtype:
            return str(q.dtype if q.dtype not in self.dtypes else k.dtype).removeprefix("torch.")
        if self.head_dims and q.shape[-1] not in self.head_dims:
            return f"head dim {q.shape[-1]}"
        if k.shape[1] != q.shape[1]:
            return "k/v heads differ (GQA)"
        reason = self.check(q, k, v) if self.check is not None else None
        return reason or self._slower(q, k)

    def _slower(self, q: Tensor, k: Tensor) -> Optional[str]:
        """The speed rule that sends these inputs to SDPA, None when the kernel is the faster one."""
        if k.shape[-2] < self.min_keys:
            return f"keys {k.shape[-2]} < {self.min_keys}"
        rows = q.shape[0] * q.shape[1] * q.shape[2]
        if rows < self.min_rows:
            return f"{rows} query rows < {self.min_rows}"
        if self.fast_head_dims and q.shape[-1] not in self.fast_head_dims:
            return f"head dim {q.shape[-1]} slower than SDPA"
        return None


def first_module(modules: tuple[str, ...]) -> Optional[str]:
    """The first of `modules` that is installed (not imported), None when none is."""
    return next((m for m in modules if has_module(m)), None)


def library_probe(modules: tuple[str, ...], min_cc: tuple[int, int],
                  max_cc: Optional[tuple[int, int]] = None) -> Callable[[torch.device], Availability]:
    """Probe for an optional library: one of `modules` installed and a CUDA GPU within min_cc..max_cc."""
    def probe(device: torch.device) -> Availability:
        module = first_module(modules)
        if module is None:
            return Availability(UNAVAILABLE, f"{' or '.join(modules)} is not installed", missing=True)
        return cuda_probe(device, min_cc, module=module, max_cc=max_cc)
    return probe


def library_fn(modules: tuple[str, ...], name: str) -> Callable:
    """`name` from the first installed of `modules`, imported now (at the first call)."""
    module = first_module(modules)
    if module is None:
        raise ImportError(f"{' or '.join(modules)} is not installed")
    return library_attr(module, name)


def first(out):
    """A library's output tensor (some versions return (out, softmax_lse))."""
    return out[0] if isinstance(out, (tuple, list)) else out
