"""What every kernel module declares: the formats it runs, whether it runs here, and its linear."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from ..formats import QuantFormat, QTensor

NATIVE, EMULATED, UNAVAILABLE = "native", "emulated", "unavailable"


@dataclass(frozen=True)
class Availability:
    """Whether a (kernel, format) pair runs on a device: native / emulated / unavailable, and why.

    missing: the kernel's library is not installed (the one case its install hint fixes)."""

    status: str
    reason: str = ""
    missing: bool = False

    @property
    def runs(self) -> bool:
        """True when native or emulated."""
        return self.status != UNAVAILABLE


# linear(x [M, K] float on the kernel's device, weight QTensor [N, K], bias [N] or None, format) -> [M, N] in x.dtype
LinearFn = Callable[[Tensor, QTensor, Optional[Tensor], QuantFormat], Tensor]


@dataclass(frozen=True)
class Kernel:
    """A kernel library: name (the mm_type suffix), formats it implements, install hint, probe, linear.

    probe(format_name, device) says whether it runs there; linear does activation quantization +
    GEMM + scales + bias for CUDA inputs (CPU inputs always take the reference path, see registry):
    x [M, K] -> [M, N], or with leading_dims x [..., K] -> [..., N] (saves two reshapes a call, which
    show at small M).
    """

    name: str
    formats: frozenset
    install_hint: str
    probe: Callable[[str, torch.device], Availability]
    linear: LinearFn
    leading_dims: bool = False


def capability(device: torch.device) -> Optional[tuple[int, int]]:
    """(major, minor) of a CUDA device, None for anything else."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(device)


def has_module(name: str) -> bool:
    """True when `name` is importable (without importing it; a submodule's parent packages are imported, and
    one that fails to import, whatever it raises, e.g. a library built for another Triton, means False)."""
    try:
        return importlib.util.find_spec(name) is not None
    except Exception:  # noqa: BLE001 - see the docstring
        return False


def cuda_probe(device: torch.device, min_cc: tuple[int, int], module: Optional[str] = None,
               max_cc: Optional[tuple[int, int]] = None) -> Availability:
    """Common probe: CUDA device present, compute capability in range, optional module importable."""
    if module is not None and not has_module(module):
        return Availability(UNAVAILABLE, f"{module} is not installed", missing=True)
    cc = capability(device)
    if cc is None:
        return Availability(UNAVAILABLE, "needs a CUDA GPU")
    if cc < min_cc or (max_cc is not None and cc > max_cc):
        want = f"sm{min_cc[0]}{min_cc[1]}" + (f"-sm{max_cc[0]}{max_cc[1]}" if max_cc else "+")
        return Availability(UNAVAILABLE, f"needs {want}, this GPU is sm{cc[0]}{cc[1]}")
    return Availability(NATIVE)


def finish(out: Tensor, bias: Optional[Tensor], dtype: torch.dtype) -> Tensor:
    """Epilogue for kernels without a fused one: add bias in fp32, cast to the output dtype."""
    if bias is not None:
        out = out + bias.float()
    return out.to(dtype)


def library_probe(module: str, min_cc: dict[str, tuple[int, int]],
                  max_cc: Optional[tuple[int, int]] = None) -> Callable[[str, torch.device], Availability]:
    """Probe for an optional library: `module` importable and the GPU within min_cc[format]..max_cc."""
    def probe(fmt_name: str, device: torch.device) -> Availability:
        return cuda_probe(device, min_cc[fmt_name], module=module, max_cc=max_cc)
    return probe


def library_attr(module: str, *names: str) -> Any:
    """Import `module` now (lazily, at first use) and return the first of `names` it defines."""
    mod = importlib.import_module(module)
    for name in names:
        found = getattr(mod, name, None)
        if found is not None:
            return found
    version = getattr(importlib.import_module(module.split(".")[0]), "__version__", "unknown version")
    raise ImportError(f"{module} ({version}) defines none of {', '.join(names)}")


def half_dtype(x: Tensor) -> torch.dtype:
    """Output dtype for epilogues that write only fp16/bf16: x's own when 16-bit, else bf16."""
    return x.dtype if x.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16


def fp32(t: Tensor) -> Tensor:
    """t as float32, without a call when it already is (weight scales are stored fp32: the usual case)."""
    return t if t.dtype == torch.float32 else t.float()


def bias_as(bias: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    """Bias in the dtype a fused epilogue wants (None stays None)."""
    return bias if bias is None or bias.dtype == dtype else bias.to(dtype)
