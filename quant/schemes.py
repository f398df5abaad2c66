"""Every user-facing mm_type (DiT) and quant_scheme (T5/CLIP) name -> (format, kernel). One table.

Names follow LightX2V's quantization guide (the long `W-...-A-...` names, renamed in 2025-10 to
the short ones) plus this pack's own kernel-suffixed names. `kernel=None` means "this format,
fastest kernel that runs here"; `auto` is resolved by the loader (see resolve_auto).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .formats import QuantFormat, get_format

AUTO = "auto"
DEFAULT = "Default"


@dataclass(frozen=True)
class Scheme:
    """What a name means: the number format (None = unquantized) and the kernel library (None = fastest)."""

    name: str
    format_name: Optional[str]
    kernel: Optional[str]

    @property
    def quantized(self) -> bool:
        """True unless the name means no quantization (Default)."""
        return self.format_name is not None

    @property
    def format(self) -> QuantFormat:
        """The QuantFormat of a quantized scheme (raises for Default)."""
        return get_format(self.format_name)

    @property
    def weight_granularity(self) -> Optional[str]:
        return self.format.weight_granularity if self.quantized else None

    @property
    def act_granularity(self) -> Optional[str]:
        return self.format.act_granularity if self.quantized else None


# name -> (format, kernel). Order is the dropdown order: Default, the pack's own kernels (run wherever
# torch / Triton run), the plain format names, then the kernel libraries' names (LightX2V's short ones, then
# its seed guide's long ones). Every name stays valid whatever its place (saved workflows store the name).
_DIT_ROWS: dict[str, tuple[Optional[str], Optional[str]]] = {
    DEFAULT: (None, None),
    # This pack's own.
    "int8-triton": ("int8", "triton"),
    "fp8-triton": ("fp8", "triton"),
    "int8-torch": ("int8", "torch"),
    "fp8-torch": ("fp8", "torch"),
    "fp8-b128-torch": ("fp8_block128", "torch"),
    "fp8-b128-triton": ("fp8_block128", "triton"),
    "mxfp8-torch": ("mxfp8", "torch"),
    "nvfp4-torch": ("nvfp4", "torch"),
    # LightX2V's current short names: formats (fastest kernel here), then libraries.
    "mxfp8": ("mxfp8", None),
    "nvfp4": ("nvfp4", None),
    "int8-vllm": ("int8", "vllm"),
    "fp8-vllm": ("fp8", "vllm"),
    "int8-sgl": ("int8", "sgl"),
    "fp8-sgl": ("fp8", "sgl"),
    "int8-q8f": ("int8", "q8f"),
    "fp8-q8f": ("fp8", "q8f"),
    "int8-torchao": ("int8", "torchao"),
    "fp8-torchao": ("fp8", "torchao"),
    "fp8-b128-deepgemm": ("fp8_block128", "deepgemm"),
    # LightX2V seed guide, exactly as written there.
    "W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Vllm": ("fp8", "vllm"),
    "W-int8-channel-sym-A-int8-channel-sym-dynamic-Vllm": ("int8", "vllm"),
    "W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Q8F": ("fp8", "q8f"),
    "W-int8-channel-sym-A-int8-channel-sym-dynamic-Q8F": ("int8", "q8f"),
    "W-fp8-block128-sym-A-fp8-channel-group128-sym-dynamic-Deepgemm": ("fp8_block128", "deepgemm"),
    "W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Sgl": ("fp8", "sgl"),
}

# Text encoders: Default, the plain int8 / fp8 format names, then the DiT names of the kernels that run T5 and
# CLIP (same format and kernel as for a DiT).
_TEXT_ROWS: dict[str, tuple[Optional[str], Optional[str]]] = {
    DEFAULT: (None, None),
    "int8": ("int8", None),
    "fp8": ("fp8", None),
    **{n: _DIT_ROWS[n] for n in ("int8-triton", "fp8-triton", "int8-torch", "fp8-torch", "int8-vllm", "fp8-vllm",
                                 "int8-sgl", "fp8-sgl", "int8-q8f", "fp8-q8f", "int8-torchao")},
}

MM_TYPES: dict[str, Scheme] = {n: Scheme(n, f, k) for n, (f, k) in _DIT_ROWS.items()}
QUANT_SCHEMES: dict[str, Scheme] = {n: Scheme(n, f, k) for n, (f, k) in _TEXT_ROWS.items()}
TABLES = {"mm_type": MM_TYPES, "quant_scheme": QUANT_SCHEMES}


def names(table: str = "mm_type") -> list[str]:
    """Dropdown entries: `auto` first, then the table in order."""
    return [AUTO, *TABLES[table]]


def get_scheme(name: str, table: str = "mm_type") -> Scheme:
    """Resolve a (non-auto) name; an unknown one fails listing every valid name."""
    try:
        return TABLES[table][name]
    except KeyError:
        raise ValueError(
            f"unknown {table} {name!r}; valid names: {', '.join(names(table))}") from None


def schemes_for_format(format_name: Optional[str], table: str = "mm_type") -> list[str]:
    """Names of the table that hold the given format (used in 'file holds X, choose one of' errors)."""
    return [n for n, s in TABLES[table].items() if s.format_name == format_name]


@dataclass(frozen=True)
class Resolved:
    """A name bound to this machine: the scheme and the kernel that will run it (None if unquantized)."""

    scheme: Scheme
    kernel: Optional[str]

    @property
    def label(self) -> str:
        """What runs, for logs: "format/kernel", Default, or why `auto` left a float file unquantized."""
        if not self.scheme.quantized:
            return DEFAULT if self.scheme.name != AUTO else "unquantized (auto: no GPU with int8/fp8 tensor cores here)"
        return f"{self.scheme.format_name}/{self.kernel}"


def native_format(device: torch.device | str) -> Optional[str]:
    """Fastest format this device has tensor cores for (fp8 on sm89+, int8 on sm75+), else None."""
    from .kernels.base import capability

    cc = capability(device)
    if cc is None:
        return None
    return "fp8" if cc >= (8, 9) else "int8" if cc >= (7, 5) else None


def runnable_names(format_name: str, table: str, device: torch.device | str) -> list[str]:
    """Names of `table` for this format whose kernel runs on device (natively or emulated)."""
    from .kernels import availability

    out = []
    for n, s in TABLES[table].items():
        if s.format_name == format_name and (s.kernel is None or availability(s.kernel, format_name, device).runs):
            out.append(n)
    return out


def resolve(name: str, table: str = "mm_type", device: torch.device | str = "cpu", file_format: Optional[str] = None) -> Resolved:
    """Bind a dropdown name to a scheme and kernel for `device`.

    file_format: the format the checkpoint already holds (None for a float checkpoint). `auto`
    takes it, or the device's native format; a named format that contradicts it is an error.
    """
    from .kernels import select

    if name == AUTO:
        fmt = file_format or native_format(device)
        scheme = Scheme(AUTO, fmt, None)
    else:
        scheme = get_scheme(name, table)
        if file_format is not None and scheme.format_name != file_format:
            fits = [AUTO, *schemes_for_format(file_format, table)]
            raise ValueError(
                f"{table} {name!r} means {scheme.format_name or 'unquantized'} weights, but the file "
                f"holds {file_format} weights; choose one of: {', '.join(fits)}")
    if not scheme.quantized:
        return Resolved(scheme, None)
    kernel = select(scheme.kernel, scheme.format_name, device, f"{table} {name!r}",
                    runnable_names(scheme.format_name, table, device))
    return Resolved(scheme, kernel)
