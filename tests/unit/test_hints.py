"""Messages and labels that name what really happens: the real blocker of a kernel, what `auto` runs on a CPU."""
import sys

import pytest
import torch

from quant import capabilities, kernels, schemes
from quant.kernels import triton as triton_kernel
from quant.kernels.base import Availability, UNAVAILABLE


def _msg(name: str, device="cpu") -> str:
    with pytest.raises(kernels.KernelUnavailable) as e:
        schemes.resolve(name, device=device)
    return str(e.value)


def test_named_kernel_without_a_gpu_names_the_gpu_not_an_install(monkeypatch):
    monkeypatch.setattr(kernels.base, "has_module", lambda name: True)  # Triton installed
    msg = _msg("int8-triton")
    assert "needs a CUDA GPU" in msg and "pip install" not in msg, msg


def test_named_kernel_on_a_too_old_gpu_names_the_compute_capability(monkeypatch):
    monkeypatch.setattr(kernels.base, "has_module", lambda name: True)
    monkeypatch.setattr(kernels.base, "capability", lambda device: (7, 5))
    msg = _msg("fp8-triton", "cuda")
    assert "needs sm89+, this GPU is sm75" in msg and "pip install" not in msg, msg


def test_named_kernel_not_installed_keeps_the_install_hint(monkeypatch):
    monkeypatch.setattr(kernels.base, "has_module", lambda name: name != "vllm")
    msg = _msg("int8-vllm")
    assert "vllm is not installed" in msg and "To use it: pip install vllm" in msg, msg


def test_triton_that_cannot_import_the_kernels_is_unavailable_with_the_error(monkeypatch):
    """A Triton that imports but lacks what the kernels use (e.g. 3.2 without triton.language.extra.libdevice):
    the probe says so, and `auto` picks another kernel instead of dying at the first step."""
    monkeypatch.setattr(kernels.base, "has_module", lambda name: name == "triton")
    monkeypatch.setattr(kernels.base, "capability", lambda device: (9, 0))
    monkeypatch.setattr(triton_kernel, "_IMPORT_ERROR", ["ImportError: cannot import name 'libdevice'"])
    a = kernels.availability("triton", "int8", torch.device("cuda"))
    assert a.status == UNAVAILABLE and "do not import with triton" in a.reason and "libdevice" in a.reason
    assert kernels.fastest("int8", torch.device("cuda")) != "triton"
    assert "libdevice" in _msg("int8-triton", "cuda")


def test_import_error_is_recorded_from_a_real_failed_import(monkeypatch):
    monkeypatch.setitem(sys.modules, "quant.kernels.triton.gemm", None)  # importing it raises ImportError
    monkeypatch.delattr(triton_kernel, "gemm", raising=False)  # (else `from . import gemm` takes the attribute)
    monkeypatch.setattr(triton_kernel, "_IMPORT_ERROR", [])
    err = triton_kernel.import_error()
    assert err is not None and "Error" in err and "gemm" in err, err


def test_auto_on_cpu_says_unquantized_not_emulated():
    entry = capabilities.capabilities("cpu")["mm_type"]["auto"]
    assert entry["status"] == "native" and entry["reason"] == "unquantized", entry  # the dropdown: "auto · unquantized"
    assert "unquantized" in entry["note"]
    assert "unquantized" in capabilities.summary_line("cpu")
    assert schemes.resolve("auto", device="cpu").label.startswith("unquantized")


def test_auto_on_a_gpu_reports_the_kernel_it_picks(monkeypatch):
    monkeypatch.setattr(kernels.base, "capability", lambda device: (8, 9))
    monkeypatch.setattr(schemes, "native_format", lambda device: "fp8")
    monkeypatch.setattr(capabilities, "native_format", lambda device: "fp8")
    monkeypatch.setattr(kernels, "availability", lambda k, f, d: Availability("native"))
    monkeypatch.setattr(capabilities, "availability", lambda k, f, d: Availability("native"))
    entry = capabilities._auto_status(torch.device("cuda"))
    assert entry["status"] == "native" and entry["format"] == "fp8" and entry["kernel"]
