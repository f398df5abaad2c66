"""quant/linear.py: QuantLinear on CPU (reference math) for every format."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from quant.formats import FORMATS
from quant.kernels import reference
from quant.linear import QuantLinear, normalize_state_dict

ALL = list(FORMATS)
K, N = 256, 200  # K a multiple of 128 (block-128); N ragged for block-128 rows


def _same_bytes(a, b):
    """Bit-exact equality of two tensors of the same dtype (fp8 included; NaN == NaN)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def _linear(bias=True, dtype=torch.float32, seed=0, k=K, n=N):
    torch.manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.normal_(0, 0.05)
        if bias:
            lin.bias.normal_(0, 0.05)
    return lin.to(dtype)


def _q(name, bias=True, dtype=torch.float32):
    return QuantLinear.from_float(_linear(bias, dtype), FORMATS[name], kernel="torch")


def _x(*lead, dtype=torch.float32, seed=1):
    return torch.randn(*lead, K, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("name", ALL)
def test_from_float_storage(name):
    f = FORMATS[name]
    q = _q(name)
    assert q.weight.dtype == f.weight_dtype
    assert tuple(q.weight.shape) == (N, f.packed_k(K))
    assert tuple(q.weight_scale.shape) == tuple(f.weight_scale_shape(N, K))
    assert q.weight_scale.dtype == {"mxfp8": torch.uint8, "nvfp4": torch.float8_e4m3fn}.get(name, torch.float32)
    assert (q.weight_global_scale is not None) == (name == "nvfp4")
    assert not q.weight.requires_grad
    assert f"format={name}" in repr(q)


@pytest.mark.parametrize("name", ALL)
def test_forward_matches_reference_and_float(name):
    lin = _linear()
    q = QuantLinear.from_float(lin, FORMATS[name], kernel="torch")
    x = _x(7)
    y = q(x)
    assert torch.equal(y, reference.linear(x, q.qweight(), q.bias, FORMATS[name]))
    y_ref = lin(x).detach()
    err = ((y - y_ref).norm() / y_ref.norm()).item()
    assert err < {"nvfp4": 0.16}.get(name, 0.06), err
    torch.testing.assert_close(q.dequantize_weight(), lin.weight.detach(),
                               atol=lin.weight.abs().max().item() * 0.2, rtol=0)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("lead", [(6,), (2, 3), (2, 1, 3)])
def test_any_leading_dims(name, lead):
    q = _q(name)
    x = _x(*lead)
    y = q(x)
    assert y.shape == (*lead, N)
    y2 = q(x.reshape(-1, K)).reshape(*lead, N)
    torch.testing.assert_close(y, y2, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_output_dtype_follows_input(name, dtype):
    q = _q(name)
    x = _x(2, 5, dtype=dtype)
    y = q(x)
    assert y.dtype == dtype and y.shape == (2, 5, N)
    y32 = q(x.float())
    tol = {torch.bfloat16: 2e-2, torch.float16: 2e-3, torch.float32: 1e-6}[dtype]
    torch.testing.assert_close(y.float(), y32, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_module(name, dtype):
    q = QuantLinear.from_float(_linear(dtype=dtype), FORMATS[name], kernel="torch")
    assert q.bias.dtype == dtype
    y = q(_x(4, dtype=dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()


@pytest.mark.parametrize("name", ALL)
def test_bias_and_no_bias(name):
    lin = _linear(bias=True)
    lin_nb = nn.Linear(K, N, bias=False)
    lin_nb.weight.data = lin.weight.data.clone()
    q = QuantLinear.from_float(lin, FORMATS[name], kernel="torch")
    q_nb = QuantLinear.from_float(lin_nb, FORMATS[name], kernel="torch")
    assert q_nb.bias is None and "bias" not in q_nb.state_dict()
    x = _x(9)
    torch.testing.assert_close(q(x) - q_nb(x), lin.bias.detach().expand(9, N), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", [(0, K), (2, 0, K), (0, 3, K)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_empty_batch(name, shape, dtype):
    q = _q(name)
    y = q(torch.empty(shape, dtype=dtype))
    assert y.shape == (*shape[:-1], N) and y.dtype == dtype


@pytest.mark.parametrize("name", ALL)
def test_non_contiguous_input_equals_contiguous(name):
    q = _q(name)
    base = torch.randn(3, K, 5, generator=torch.Generator().manual_seed(2))
    x = base.transpose(1, 2)  # [3, 5, K], not contiguous
    assert not x.is_contiguous()
    assert torch.equal(q(x), q(x.contiguous()))
    x2 = torch.randn(10, 2 * K, generator=torch.Generator().manual_seed(3))[:, ::2]  # strided last dim
    assert torch.equal(q(x2), q(x2.contiguous()))


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip(name, tmp_path):
    q = _q(name)
    sd = q.state_dict()
    fresh = QuantLinear(K, N, bias=True, fmt=FORMATS[name], kernel="torch")
    fresh.load_state_dict(sd)
    x = _x(2, 4)
    assert torch.equal(fresh(x), q(x))
    # and through a safetensors file (fp8 / uint8 / scalar global scale survive)
    path = str(tmp_path / "layer.safetensors")
    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    fresh2 = QuantLinear(K, N, bias=True, fmt=FORMATS[name], kernel="torch")
    fresh2.load_state_dict(load_file(path))
    assert torch.equal(fresh2(x), q(x))
    for k, v in sd.items():
        assert _same_bytes(fresh2.state_dict()[k], v), k


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_loading_a_float_state_dict_quantizes_it(name, dtype):
    lin = _linear(dtype=dtype)
    ref = QuantLinear.from_float(lin, FORMATS[name], kernel="torch")
    fresh = QuantLinear(K, N, bias=True, fmt=FORMATS[name], kernel="torch", dtype=dtype)
    fresh.load_state_dict({"weight": lin.weight.detach().clone(), "bias": lin.bias.detach().clone()})
    for k, v in ref.state_dict().items():
        assert _same_bytes(fresh.state_dict()[k], v), k
    x = _x(3, dtype=dtype)
    assert torch.equal(fresh(x), ref(x))


def test_loading_a_float_state_dict_with_prefix():
    lin = _linear()
    model = nn.Sequential()
    model.add_module("proj", QuantLinear(K, N, bias=True, fmt=FORMATS["int8"], kernel="torch"))
    model.load_state_dict({"proj.weight": lin.weight.detach(), "proj.bias": lin.bias.detach()})
    ref = QuantLinear.from_float(lin, FORMATS["int8"], kernel="torch")
    assert torch.equal(model.proj.weight, ref.weight)


@pytest.mark.parametrize("name", ["int8", "fp8", "fp8_block128"])
@pytest.mark.parametrize("scale_shape", ["same", "flat"])
def test_bf16_scale_lightx2v_style_is_converted_to_fp32(name, scale_shape):
    q = _q(name)
    sd = {k: v.clone() for k, v in q.state_dict().items()}
    s16 = sd["weight_scale"].to(torch.bfloat16)
    sd["weight_scale"] = s16.reshape(-1) if scale_shape == "flat" and name != "fp8_block128" else s16
    fresh = QuantLinear(K, N, bias=True, fmt=FORMATS[name], kernel="torch")
    fresh.load_state_dict(sd)
    assert fresh.weight_scale.dtype == torch.float32
    assert tuple(fresh.weight_scale.shape) == tuple(q.weight_scale.shape)
    assert torch.equal(fresh.weight_scale, s16.float().reshape(q.weight_scale.shape))
    y, y_ref = fresh(_x(4)), q(_x(4))
    assert ((y - y_ref).norm() / y_ref.norm()).item() < 0.01  # bf16 scale: ~3 significant digits


def test_normalize_state_dict_mxfp8_e8m0_scale_viewed_as_uint8():
    q = _q("mxfp8")
    sd = {"weight": q.weight.data.clone(), "weight_scale": q.weight_scale.data.clone().view(torch.float8_e8m0fnu)}
    normalize_state_dict(sd, "", FORMATS["mxfp8"], K, N)
    assert sd["weight_scale"].dtype == torch.uint8
    assert torch.equal(sd["weight_scale"], q.weight_scale.data)


def test_set_float_weight_shape_checked():
    q = _q("int8")
    with pytest.raises(ValueError, match="expected"):
        q.set_float_weight(torch.randn(N, K + 1), "blocks.0.q.weight")


@pytest.mark.parametrize("name,k", [("fp8_block128", 100), ("mxfp8", 48), ("nvfp4", 8)])
def test_constructor_refuses_k_not_divisible(name, k):
    with pytest.raises(ValueError, match=f"block size {FORMATS[name].k_multiple}"):
        QuantLinear(k, 16, fmt=FORMATS[name], kernel="torch")
