"""Attention-kernel registry: one row per kernel, the speed order per GPU generation, name resolution, the
per-call fallback to SDPA and the call counter the Sample report reads.

A named kernel runs or `select` raises AttentionUnavailable (what to install, which names run here); `auto`
takes the first kernel of FASTEST[compute capability major] that runs here, else SDPA, so it never fails.
Per call, inputs a kernel cannot take (a mask, head dim, dtype, CPU tensors, too few keys, ...) run SDPA
and the reason is counted: `attention()` here, or ComfyUI's own function in nodes/attention.py.
Layout everywhere: q [B, H, Lq, D], k / v [B, H, Lk, D] -> [B, H, Lq, D].
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..calls import CallCounter
from ..kernels.base import Availability, capability
from . import fa3, kitchen, own, sage, sdpa
from .base import AttentionKernel

AUTO = "auto"
DEFAULT = "sdpa"  # runs everywhere; what auto means where nothing measured faster runs

KERNELS: dict[str, AttentionKernel] = {k.name: k for k in (
    sdpa.KERNEL, *own.KERNELS, *fa3.KERNELS, sage.KERNEL, kitchen.KERNEL)}

# Fastest first per GPU generation (compute capability major), only kernels within the error target (<= 0.05),
# from H200 measurements: qattn 1.26-1.31x SDPA on Wan self-attention, error 0.041
# (bench/results/h200-attention.md); FlashAttention-3 bf16 1.22x, lossless (issue 16). Each kernel's speed rules
# send the shapes where it is slower to SDPA. Generations not listed (Ampere, Ada, Blackwell, CPU): SDPA, since
# nothing else was measured there (every kernel can still be chosen by name).
FASTEST: dict[int, tuple[str, ...]] = {9: ("qattn", "fa3", DEFAULT)}

# Kernel label -> calls since the last clear (the Sample node clears and reads it); see quant.calls.
RAN = CallCounter()


class AttentionUnavailable(RuntimeError):
    """A named attention kernel cannot run on this machine; the message says what to do."""


def names() -> list[str]:
    """Dropdown values: auto, then every kernel."""
    return [AUTO, *KERNELS]


def availability(name: str, device: torch.device) -> Availability:
    """Whether kernel `name` runs on device, and why not."""
    return KERNELS[name].probe(torch.device(device))


def runnable(device: torch.device) -> list[str]:
    """The names that run on device (auto first)."""
    return [AUTO, *(n for n in KERNELS if availability(n, device).runs)]


def fastest(device: torch.device) -> str:
    """The first kernel of this GPU generation's FASTEST order that runs on device, else SDPA."""
    cc = capability(torch.device(device))
    for name in FASTEST.get(cc[0], ()) if cc else ():
        if availability(name, device).runs:
            return name
    return DEFAULT


def select(name: str, device: torch.device) -> str:
    """The kernel for a dropdown name: auto -> fastest here; a kernel name -> itself if it runs here, else
    AttentionUnavailable naming the reason, what to install and the names that run here."""
    if name == AUTO:
        return fastest(device)
    if name not in KERNELS:
        raise AttentionUnavailable(f"unknown attention kernel {name!r}; names: {', '.join(names())}")
    avail = availability(name, device)
    if not avail.runs:
        hint = KERNELS[name].install_hint if avail.missing else ""
        raise AttentionUnavailable(
            f"attention {name!r} cannot run here: {avail.reason}." + (f" To use it: {hint}." if hint else "")
            + f" Names that run here: {', '.join(runnable(device))}")
    return name


def why_not(name: str, q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None,
            full_precision: bool = False) -> Optional[str]:
    """None when kernel `name` runs these inputs, else the reason they take the fallback."""
    return KERNELS[name].unsupported(q, k, v, mask, full_precision)


def fallback_label(ran: str, reason: str) -> str:
    """Counter label of a call that ran `ran` instead of the chosen kernel, e.g. "sdpa (fallback: mask)"."""
    return f"{ran} (fallback: {reason})"


def count(label: str) -> None:
    """One call of `label` in RAN (not while torch.compile traces: see quant.calls)."""
    if not torch.compiler.is_compiling():
        RAN.add(label)


def run(name: str, q: Tensor, k: Tensor, v: Tensor, scale: Optional[float] = None) -> Tensor:
    """Kernel `name` on inputs it takes (see why_not), counted: [B, H, Lq, D] in q.dtype."""
    count(name)
    return KERNELS[name].run(q, k, v, scale)


def attention(name: str, q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None,
              scale: Optional[float] = None) -> Tensor:
    """Kernel `name` (a select()ed name), or SDPA on inputs it cannot take; every call counted in RAN.
    mask: broadcastable to [B, H, Lq, Lk] (bool keeps, float adds)."""
    reason = why_not(name, q, k, v, mask)
    if reason is None:
        return run(name, q, k, v, scale)
    count(DEFAULT if name == DEFAULT else fallback_label(DEFAULT, reason))  # sdpa itself: only a mask lands here
    return sdpa.attention(q, k, v, scale, mask)


__all__ = ["AUTO", "DEFAULT", "KERNELS", "FASTEST", "RAN", "AttentionKernel", "AttentionUnavailable", "names",
           "availability", "runnable", "fastest", "select", "why_not", "fallback_label", "count", "run",
           "attention"]
