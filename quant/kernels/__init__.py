"""Kernel registry: one row per kernel library, the per-format speed order, and name resolution.

A scheme naming a kernel runs that kernel or raises KernelUnavailable (what to install, which names
run here); a scheme with kernel=None takes the first kernel of FASTEST[format] that runs natively,
falling back to "torch" (native or emulated), so `auto` and plain format names never fail.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..formats import QuantFormat, QTensor
from . import deepgemm, q8f, reference, sgl, torch_ops, torchao, vllm
from . import triton as triton_kernel
from .base import EMULATED, NATIVE, UNAVAILABLE, Availability, Kernel, capability

KERNELS: dict[str, Kernel] = {k.name: k for k in (
    torch_ops.KERNEL, triton_kernel.KERNEL, vllm.KERNEL, sgl.KERNEL, q8f.KERNEL, deepgemm.KERNEL, torchao.KERNEL)}

# Fastest first, from bench/results (H100). "torch" is last: it always runs (emulated at worst).
FASTEST: dict[str, tuple[str, ...]] = {
    "int8": ("triton", "vllm", "sgl", "q8f", "torch"),
    "fp8": ("torch", "triton", "vllm", "sgl", "q8f"),
    "fp8_block128": ("torch", "triton", "deepgemm"),
    "mxfp8": ("torch",),
    "nvfp4": ("torch",),
}


# Hopper and newer: the persistent TMA Triton GEMM (kernels.triton_gemm_tma) beats cuBLAS' rowwise fp8
# at every measured shape (bench/results/h100.md); older GPUs keep FASTEST.
FASTEST_SM90: dict[str, tuple[str, ...]] = {"fp8": ("triton", "torch", "vllm", "sgl", "q8f")}


class KernelUnavailable(RuntimeError):
    """A scheme names a kernel that cannot run on this machine; the message says what to do."""


def availability(kernel: str, fmt_name: str, device: torch.device) -> Availability:
    """native / emulated / unavailable (with the reason) for one kernel and format on a device."""
    k = KERNELS.get(kernel)
    if k is None:
        return Availability(UNAVAILABLE, f"kernel {kernel!r} is not part of this build")
    if fmt_name not in k.formats:
        return Availability(UNAVAILABLE, f"{kernel} has no {fmt_name} kernel")
    return k.probe(fmt_name, device)


def fastest(fmt_name: str, device: torch.device) -> str:
    """The first kernel of FASTEST[fmt_name] (FASTEST_SM90[fmt_name] on sm90+) that runs natively on device, else "torch"."""
    order = FASTEST_SM90.get(fmt_name, FASTEST[fmt_name]) if (capability(device) or (0, 0)) >= (9, 0) else FASTEST[fmt_name]
    for name in order:
        if availability(name, fmt_name, device).status == NATIVE:
            return name
    return "torch"


def select(kernel: Optional[str], fmt_name: str, device: torch.device, label: str,
           runnable_names: list[str]) -> str:
    """Kernel to use for a scheme: the named one if it runs here, else raise with a useful message."""
    if kernel is None:
        return fastest(fmt_name, device)
    avail = availability(kernel, fmt_name, device)
    if not avail.runs:
        hint = KERNELS[kernel].install_hint if kernel in KERNELS and avail.missing else ""
        raise KernelUnavailable(
            f"{label} needs the {kernel} kernel, which cannot run here: {avail.reason}."
            + (f" To use it: {hint}." if hint else "")
            + f" Names that run here: {', '.join(runnable_names)}")
    return kernel


def run_linear(kernel: str, x: Tensor, w: QTensor, bias: Optional[Tensor], fmt: QuantFormat) -> Tensor:
    """x [..., K] (not empty) -> [..., N] in x.dtype with the chosen kernel; inputs off CUDA take the
    reference math. Leading dims are flattened for kernels (and the reference) that take [M, K] only."""
    k = KERNELS[kernel]
    if x.dim() != 2 and not (k.leading_dims and x.is_cuda):
        out = run_linear(kernel, x.reshape(-1, x.shape[-1]), w, bias, fmt)
        return out.reshape(*x.shape[:-1], out.shape[-1])
    if not x.is_cuda:
        return reference.linear(x, w, bias, fmt)
    return k.linear(x, w, bias, fmt)


__all__ = ["KERNELS", "FASTEST", "FASTEST_SM90", "Availability", "Kernel", "KernelUnavailable", "NATIVE",
           "EMULATED", "UNAVAILABLE", "availability", "fastest", "select", "run_linear"]
