"""What runs on this machine: GPU, versions, and native / emulated / unavailable for every name
(mm_type, quant_scheme and attention tables).

Feeds the `/quantized/capabilities` route, the dropdown status marks and the start-up log line.
"""
from __future__ import annotations

import torch

from . import attention
from .kernels import KERNELS, availability, fastest
from .kernels.base import NATIVE, capability
from .schemes import AUTO, TABLES, Scheme, native_format


def _name_status(scheme, device) -> dict:
    if not scheme.quantized:
        return {"status": NATIVE, "reason": "unquantized"}
    kernel = scheme.kernel or fastest(scheme.format_name, device)
    avail = availability(kernel, scheme.format_name, device)
    return {"status": avail.status, "reason": avail.reason, "kernel": kernel, "format": scheme.format_name}


def _auto_status(device) -> dict:
    """What `auto` does with a float file here (quantized files keep their format: see schemes.resolve)."""
    fmt = native_format(device)
    if fmt is None:
        return {"status": NATIVE, "reason": "unquantized",
                "note": "no GPU with int8/fp8 tensor cores: float files run unquantized, quantized files emulated"}
    return {**_name_status(Scheme(AUTO, fmt, None), device), "note": "float files quantized to " + fmt}


def _attention_table(device) -> dict:
    """auto (and the kernel it picks here), then every attention kernel's status."""
    entries = {attention.AUTO: {"status": NATIVE, "reason": "", "kernel": attention.fastest(device)}}
    for name in attention.KERNELS:
        avail = attention.availability(name, device)
        entries[name] = {"status": avail.status, "reason": avail.reason}
    return entries


def capabilities(device: torch.device | str | None = None) -> dict:
    """JSON-ready report: device, versions, and per table (mm_type, quant_scheme) each name's status."""
    if device is None:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    cc = capability(device)
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    report = {
        "device": torch.cuda.get_device_name(device) if cc else "cpu",
        "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
        "torch": torch.__version__,
        "triton": triton_version,
        "kernels": {name: sorted(k.formats) for name, k in KERNELS.items()},
    }
    for table, rows in TABLES.items():
        entries = {AUTO: _auto_status(device)}
        entries.update({name: _name_status(s, device) for name, s in rows.items()})
        report[table] = entries
    report["attention"] = _attention_table(device)
    return report


def summary_line(device: torch.device | str | None = None) -> str:
    """One log line: which kernel libraries run natively here."""
    rep = capabilities(device)
    native = sorted({e["kernel"] for e in rep["mm_type"].values() if e.get("kernel") and e["status"] == NATIVE})
    where = rep["device"] + (f" (sm{rep['compute_capability'].replace('.', '')})" if rep["compute_capability"] else "")
    return f"comfyui-quantized: {where}; native kernels: {', '.join(native) or 'none'}" + (
        "" if native else "; auto runs float files unquantized, quantized files emulated (slow)")
