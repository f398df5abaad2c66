"""quant/schemes.py: every user-facing name, and resolution on a CPU-only machine."""
from __future__ import annotations

import dataclasses

import pytest

from quant import schemes
from quant.kernels import KernelUnavailable

SEED_GUIDE = {
    "W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Vllm": ("fp8", "vllm"),
    "W-int8-channel-sym-A-int8-channel-sym-dynamic-Vllm": ("int8", "vllm"),
    "W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Q8F": ("fp8", "q8f"),
    "W-int8-channel-sym-A-int8-channel-sym-dynamic-Q8F": ("int8", "q8f"),
    "W-fp8-block128-sym-A-fp8-channel-group128-sym-dynamic-Deepgemm": ("fp8_block128", "deepgemm"),
    "W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Sgl": ("fp8", "sgl"),
}
LIGHTX2V_SHORT = {
    "int8-vllm": ("int8", "vllm"), "fp8-vllm": ("fp8", "vllm"), "int8-sgl": ("int8", "sgl"),
    "fp8-sgl": ("fp8", "sgl"), "int8-q8f": ("int8", "q8f"), "fp8-q8f": ("fp8", "q8f"),
    "int8-torchao": ("int8", "torchao"), "fp8-torchao": ("fp8", "torchao"),
    "fp8-b128-deepgemm": ("fp8_block128", "deepgemm"), "mxfp8": ("mxfp8", None), "nvfp4": ("nvfp4", None),
}
PACK_OWN = {"int8-triton": ("int8", "triton"), "fp8-triton": ("fp8", "triton"),
            "fp8-b128-triton": ("fp8_block128", "triton"), "fp8-torch": ("fp8", "torch")}
MM_TYPES = {"Default": (None, None), **SEED_GUIDE, **LIGHTX2V_SHORT, **PACK_OWN}


@pytest.mark.parametrize("name", sorted(MM_TYPES))
def test_every_mm_type_name_is_accepted_exactly(name):
    s = schemes.get_scheme(name, "mm_type")
    assert s.name == name
    assert (s.format_name, s.kernel) == MM_TYPES[name]
    assert name in schemes.names("mm_type")


def test_seed_guide_names_are_case_sensitive():
    with pytest.raises(ValueError):
        schemes.get_scheme("w-fp8-channel-sym-a-fp8-channel-sym-dynamic-vllm")
    with pytest.raises(ValueError):
        schemes.get_scheme("W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Vllm ")


def test_auto_first_in_both_dropdowns():
    assert schemes.names("mm_type")[0] == "auto"
    assert schemes.names("quant_scheme")[0] == "auto"
    assert schemes.names("mm_type")[1] == "Default"
    assert len(set(schemes.names("mm_type"))) == len(schemes.names("mm_type"))


@pytest.mark.parametrize("name,fmt,kernel", [
    ("Default", None, None), ("int8", "int8", None), ("fp8", "fp8", None), ("int8-torchao", "int8", "torchao"),
    ("int8-q8f", "int8", "q8f"), ("fp8-q8f", "fp8", "q8f")])
def test_quant_scheme_table(name, fmt, kernel):
    s = schemes.get_scheme(name, "quant_scheme")
    assert (s.format_name, s.kernel) == (fmt, kernel)
    assert name in schemes.names("quant_scheme")


def test_quant_scheme_has_kernel_suffixed_names():
    qs = schemes.names("quant_scheme")
    for n in ("int8-triton", "fp8-triton", "int8-vllm", "fp8-vllm"):
        assert n in qs


def test_scheme_descriptions():
    s = schemes.get_scheme("W-fp8-block128-sym-A-fp8-channel-group128-sym-dynamic-Deepgemm")
    assert s.quantized and s.weight_granularity == "block128x128" and s.act_granularity == "group128"
    s = schemes.get_scheme("int8-vllm")
    assert s.weight_granularity == "channel" and s.act_granularity == "token"
    assert s.format.name == "int8"
    d = schemes.get_scheme("Default")
    assert not d.quantized and d.weight_granularity is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.kernel = "torch"


@pytest.mark.parametrize("table", ["mm_type", "quant_scheme"])
def test_unknown_name_lists_valid_names(table):
    with pytest.raises(ValueError) as e:
        schemes.get_scheme("int4-magic", table)
    msg = str(e.value)
    assert "int4-magic" in msg and "auto" in msg and "Default" in msg
    for n in schemes.names(table):
        assert n in msg
    with pytest.raises(ValueError, match="valid names"):
        schemes.resolve("int4-magic", table)


def test_resolve_auto_on_cpu_without_file_is_unquantized():
    r = schemes.resolve("auto", device="cpu")
    assert not r.scheme.quantized
    assert r.kernel is None
    assert r.label.startswith("unquantized") and "auto" in r.label


@pytest.mark.parametrize("fmt", ["int8", "fp8", "fp8_block128", "mxfp8", "nvfp4"])
def test_resolve_auto_takes_the_file_format(fmt):
    r = schemes.resolve("auto", device="cpu", file_format=fmt)
    assert r.scheme.format_name == fmt
    assert r.kernel == "torch"
    assert r.label == f"{fmt}/torch"


def test_resolve_auto_int8_file_uses_torch_kernel():
    r = schemes.resolve("auto", file_format="int8")
    assert (r.scheme.format_name, r.kernel) == ("int8", "torch")


@pytest.mark.parametrize("table,name,fmt", [("quant_scheme", "int8", "int8"), ("quant_scheme", "fp8", "fp8"),
                                            ("mm_type", "mxfp8", "mxfp8"), ("mm_type", "nvfp4", "nvfp4"),
                                            ("mm_type", "fp8-torch", "fp8"), ("mm_type", "int8-torch", "int8")])
def test_resolve_format_names_never_fail_on_cpu(table, name, fmt):
    r = schemes.resolve(name, table, device="cpu")
    assert (r.scheme.format_name, r.kernel) == (fmt, "torch")


def test_resolve_contradicting_file_format():
    with pytest.raises(ValueError) as e:
        schemes.resolve("fp8-torch", file_format="int8")
    msg = str(e.value)
    assert "fp8-torch" in msg
    assert "holds int8" in msg
    assert "int8-torch" in msg and "int8-vllm" in msg and "auto" in msg
    assert "fp8-vllm" not in msg.split("choose one of:")[1]


def test_resolve_default_against_quantized_file_is_an_error():
    with pytest.raises(ValueError, match="holds fp8"):
        schemes.resolve("Default", file_format="fp8")


def test_resolve_matching_file_format():
    r = schemes.resolve("int8-torch", file_format="int8")
    assert (r.scheme.format_name, r.kernel) == ("int8", "torch")


@pytest.mark.parametrize("name", ["int8-triton", "fp8-vllm", "W-fp8-block128-sym-A-fp8-channel-group128-sym-dynamic-Deepgemm",
                                  "int8-q8f", "fp8-sgl", "int8-torchao"])
def test_named_kernel_that_cannot_run_raises_kernel_unavailable(name):
    with pytest.raises(KernelUnavailable) as e:
        schemes.resolve(name, device="cpu")
    msg = str(e.value)
    assert name in msg
    assert "Names that run here:" in msg
    runnable = msg.split("Names that run here:")[1]
    fmt = schemes.get_scheme(name).format_name
    assert {"int8": "int8-torch", "fp8": "fp8-torch", "fp8_block128": "fp8-b128-torch"}[fmt] in runnable
    assert name not in runnable


def test_int8_triton_on_cpu_message():
    with pytest.raises(KernelUnavailable) as e:
        schemes.resolve("int8-triton", device="cpu")
    msg = str(e.value)
    assert "triton" in msg and "int8-torch" in msg
    assert isinstance(e.value, RuntimeError)


def test_runnable_names_on_cpu():
    assert schemes.runnable_names("int8", "mm_type", "cpu") == ["int8-torch"]
    assert set(schemes.runnable_names("int8", "quant_scheme", "cpu")) == {"int8", "int8-torch"}
    assert schemes.native_format("cpu") is None


def test_schemes_for_format():
    fits = schemes.schemes_for_format("fp8_block128")
    assert set(fits) == {"W-fp8-block128-sym-A-fp8-channel-group128-sym-dynamic-Deepgemm", "fp8-b128-deepgemm",
                         "fp8-b128-triton", "fp8-b128-torch"}
