"""Reference quantizers of quant/formats: hand-computed codes and scales, round trips, error bounds.

Measured output relative error ||y_q - y_ref|| / ||y_ref|| of one linear layer, reference kernel
(activation quantized per token / per group, dynamic), seed 0: x [64, 1024] ~ N(0, 1) with
channels 3, 100, 517, 900 scaled x20 (outliers), w [512, 1024] ~ N(0, 0.02), bias ~ N(0, 0.02).
Seeds 0..4 vary by less than 0.004; the bound asserted below has ~15-25% headroom.

| format       | measured (seed 0) | seeds 0-4       | no outliers | asserted bound |
|--------------|-------------------|-----------------|-------------|----------------|
| int8         | 0.0443            | 0.0443 - 0.0454 | 0.0111      | < 0.055        |
| fp8          | 0.0341            | 0.0325 - 0.0345 | 0.0374      | < 0.042        |
| fp8_block128 | 0.0314            | 0.0312 - 0.0323 | 0.0366      | < 0.040        |
| mxfp8        | 0.0473            | 0.0445 - 0.0473 | 0.0412      | < 0.058        |
| nvfp4        | 0.1300            | 0.1300 - 0.1349 | 0.1337      | < 0.155        |

int8 is above the issue's example "< 0.02" *with* outliers: a x20 channel sets the per-token
absmax, so the ordinary channels keep ~5 bits. Without outliers int8 measures 0.011 (bound 0.015,
asserted in test_linear_error_without_outliers).
"""
from __future__ import annotations

import math

import pytest
import torch

from quant.formats import FORMATS, get_format
from quant.formats import fp8, fp8_block128, int8, mxfp8, nvfp4
from quant.kernels import reference

ALL = list(FORMATS)

# ------------------------------------------------------------------ registry


def test_registry_holds_the_five_formats():
    assert set(FORMATS) == {"int8", "fp8", "fp8_block128", "mxfp8", "nvfp4"}
    with pytest.raises(ValueError, match="valid: .*int8"):
        get_format("int4")


@pytest.mark.parametrize("name,wdtype,k_multiple", [
    ("int8", torch.int8, 1), ("fp8", torch.float8_e4m3fn, 1), ("fp8_block128", torch.float8_e4m3fn, 128),
    ("mxfp8", torch.float8_e4m3fn, 32), ("nvfp4", torch.uint8, 16)])
def test_format_declarations(name, wdtype, k_multiple):
    f = FORMATS[name]
    assert f.weight_dtype == wdtype
    assert f.k_multiple == k_multiple
    q = f.quantize_weight(torch.randn(200, 256))
    assert q.data.dtype == wdtype
    assert tuple(q.data.shape) == (200, f.packed_k(256))
    assert tuple(q.scale.shape) == tuple(f.weight_scale_shape(200, 256))


# ------------------------------------------------------------------ int8


def test_int8_hand_computed():
    x = torch.tensor([[254.0, -127.0, 1.0, 3.0, -0.9, 0.0],
                      [1.0, -2.0, 127 / 2, 127.0, 0.5, -1.5],
                      [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    q = int8.quantize(x)
    assert q.data.dtype == torch.int8 and q.scale.dtype == torch.float32
    assert q.scale.shape == (3, 1)
    assert q.scale[0, 0].item() == 2.0 and q.scale[1, 0].item() == 1.0
    assert q.scale[2, 0].item() > 0  # zero row: a tiny positive scale, never 0 (no 0/0)
    # 254/2 = 127; -127/2 = -63.5 -> -64 and 1/2 = 0.5 -> 0 and 3/2 = 1.5 -> 2 (half to even); -0.45 -> 0.
    assert q.data[0].tolist() == [127, -64, 0, 2, 0, 0]
    # 63.5 -> 64 (even), 0.5 -> 0, -1.5 -> -2.
    assert q.data[1].tolist() == [1, -2, 64, 127, 0, -2]
    assert q.data[2].tolist() == [0] * 6
    d = int8.FORMAT.dequantize_weight(q, torch.float32)
    assert d[0].tolist() == [254.0, -128.0, 0.0, 4.0, 0.0, 0.0]
    assert d[1].tolist() == [1.0, -2.0, 64.0, 127.0, 0.0, -2.0]
    assert d[2].tolist() == [0.0] * 6


def test_int8_elementwise_error_is_half_a_step():
    w = torch.randn(64, 300, generator=torch.Generator().manual_seed(0))
    q = int8.quantize(w)
    d = int8.FORMAT.dequantize_weight(q, torch.float32)
    assert ((d - w).abs() <= q.scale / 2 * (1 + 1e-5)).all()
    assert torch.allclose(q.scale, w.abs().amax(1, keepdim=True) / 127)


# ------------------------------------------------------------------ fp8


def test_fp8_hand_computed():
    x = torch.tensor([[448.0, -224.0, 1.0, 0.0],
                      [896.0, 3.0, -1.5, 0.1],
                      [0.0, 0.0, 0.0, 0.0]])
    q = fp8.quantize(x)
    assert q.data.dtype == torch.float8_e4m3fn
    assert q.scale.shape == (3, 1)
    assert q.scale[:2, 0].tolist() == [1.0, 2.0]  # absmax / 448
    assert q.data[0].float().tolist() == [448.0, -224.0, 1.0, 0.0]
    # 896/2 = 448, 3/2 = 1.5, -0.75 exact; 0.05 = 1.6 * 2^-5 -> nearest e4m3 is 1.625 * 2^-5 = 0.05078125.
    assert q.data[1].float().tolist() == [448.0, 1.5, -0.75, 0.05078125]
    assert q.data[2].float().tolist() == [0.0] * 4
    d = fp8.FORMAT.dequantize_weight(q, torch.float32)
    assert d[1].tolist() == [896.0, 3.0, -1.5, 0.1015625]
    assert torch.isfinite(d).all() and d[2].abs().sum() == 0


def test_fp8_scale_is_absmax_over_448():
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(1)) * 5
    q = fp8.quantize(w)
    torch.testing.assert_close(q.scale, w.abs().amax(1, keepdim=True) / 448, rtol=0, atol=0)
    # the row's absmax element lands exactly on +-448
    assert (q.data.float().abs().amax(1) == 448).all()


# ------------------------------------------------------------------ fp8 block-128


def test_fp8_block128_scale_shape_ragged_n_and_values():
    n, k = 200, 256  # ragged N: 2 block rows, the second one 72 rows tall
    w = torch.zeros(n, k)
    w[0, 0] = 448 * 3.0      # block (0, 0): scale 3
    w[5, 7] = -100.0
    w[130, 200] = -448 * 0.5  # block (1, 1): scale 0.5
    w[199, 5] = 448.0         # block (1, 0): scale 1 (last, partial block row)
    q = fp8_block128.quantize_weight(w)
    assert q.scale.shape == (2, 2) == fp8_block128.FORMAT.weight_scale_shape(n, k)
    assert q.scale.dtype == torch.float32
    assert q.scale[0, 0].item() == 3.0 and q.scale[1, 1].item() == 0.5 and q.scale[1, 0].item() == 1.0
    assert 0 < q.scale[0, 1].item() < 1e-10  # all-zero block: tiny, not 0
    assert q.data.shape == (n, k)
    assert q.data[0, 0].float().item() == 448.0 and q.data[130, 200].float().item() == -448.0
    assert q.data[199, 5].float().item() == 448.0
    d = fp8_block128.dequantize_weight(q, torch.float32)
    assert d.shape == (n, k) and torch.isfinite(d).all()
    # -100 / 3 = -33.33 -> e4m3 step 4 in [32, 64): -32 -> -96
    assert d[5, 7].item() == -96.0
    assert d[0, 0].item() == 1344.0 and d[199, 5].item() == 448.0 and d[130, 200].item() == -224.0
    assert d.count_nonzero().item() == 4


@pytest.mark.parametrize("n", [1, 127, 128, 129, 300])
def test_fp8_block128_scale_shape_is_ceil_n(n):
    q = fp8_block128.quantize_weight(torch.randn(n, 384))
    assert q.scale.shape == (math.ceil(n / 128), 3)
    assert fp8_block128.dequantize_weight(q, torch.float32).shape == (n, 384)


def test_fp8_block128_activation_groups():
    x = torch.zeros(3, 256)
    x[0, :128] = 1.0
    x[0, 128] = -896.0
    x[1, 5] = 44.8
    q = fp8_block128.quantize_activation(x)
    assert q.scale.shape == (3, 2)
    torch.testing.assert_close(q.scale[0], torch.tensor([1 / 448, 2.0]), rtol=1e-7, atol=0)
    torch.testing.assert_close(q.scale[1, 0], torch.tensor(0.1))
    assert q.data[0, 128].float().item() == -448.0
    d = fp8_block128.dequantize_activation(q, torch.float32)
    assert torch.isfinite(d).all() and d[2].abs().sum() == 0
    torch.testing.assert_close(d, x, rtol=2 ** -4, atol=0)


# ------------------------------------------------------------------ mxfp8


def test_mxfp8_exponent_is_floor_log2_amax_minus_8_biased():
    x = torch.zeros(1, 5 * 32)
    x[0, 0] = 1.0      # group 0: floor(log2 1) - 8 = -8 -> biased 119
    x[0, 32] = 3.0     # group 1: 1 - 8 = -7 -> 120
    x[0, 64] = 0.75    # group 2: -1 - 8 = -9 -> 118
    x[0, 65] = 0.1
    x[0, 96] = 500.0   # group 3: 8 - 8 = 0 -> 127; 500 saturates to 448 (OCP: no scale bump)
    x[0, 97] = -448.0
    # group 4 is all zero: a finite tiny scale (amax clamped to 1e-12: floor(-39.9) - 8 = -48 -> 79)
    q = mxfp8.quantize(x)
    assert q.scale.dtype == torch.uint8 and q.scale.shape == (1, 5)
    assert q.scale[0].tolist() == [119, 120, 118, 127, 79]
    assert q.data[0, 0].float().item() == 256.0    # 1 / 2^-8
    assert q.data[0, 32].float().item() == 384.0   # 3 / 2^-7
    assert q.data[0, 64].float().item() == 384.0   # 0.75 / 2^-9
    assert q.data[0, 96].float().item() == 448.0   # saturated
    assert q.data[0, 97].float().item() == -448.0
    d = mxfp8.dequantize(q, torch.float32)
    assert d[0, 0].item() == 1.0 and d[0, 32].item() == 3.0 and d[0, 64].item() == 0.75
    assert d[0, 96].item() == 448.0
    # 0.1 / 2^-9 = 51.2 -> e4m3 step 4 in [32, 64): 52 -> 0.1015625
    assert d[0, 65].item() == 52 * 2.0 ** -9


def test_mxfp8_exponent_values_explicit():
    for amax, biased in [(1.0, 119), (3.0, 120), (0.75, 118), (500.0, 127), (2.0 ** -20, 127 - 28), (448.0, 127),
                         (1024.0, 129)]:
        x = torch.zeros(1, 32)
        x[0, 3] = amax
        q = mxfp8.quantize(x)
        assert q.scale.item() == biased, (amax, q.scale.item())
        assert q.scale.item() == math.floor(math.log2(amax)) - 8 + 127


# ------------------------------------------------------------------ nvfp4


def test_e2m1_code_table():
    vals = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    assert nvfp4.encode_e2m1(vals).tolist() == list(range(8))
    assert nvfp4.encode_e2m1(-vals[1:]).tolist() == [8 | c for c in range(1, 8)]
    codes = torch.arange(16, dtype=torch.uint8)
    assert nvfp4.decode_e2m1(codes).tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                                                 -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def test_e2m1_round_to_nearest_even_ties_and_saturation():
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    # each tie goes to the neighbour with an even mantissa: 0, 1, 1, 2, 2, 4, 4
    assert nvfp4.decode_e2m1(nvfp4.encode_e2m1(ties)).tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
    assert nvfp4.decode_e2m1(nvfp4.encode_e2m1(-ties)).tolist() == [-0.0, -1.0, -1.0, -2.0, -2.0, -4.0, -4.0]
    near = torch.tensor([0.26, 0.74, 1.3, 2.6, 3.4, 5.1, 7.0, 100.0, 0.1])
    assert nvfp4.decode_e2m1(nvfp4.encode_e2m1(near)).tolist() == [0.5, 0.5, 1.5, 3.0, 3.0, 6.0, 6.0, 6.0, 0.0]


def test_nvfp4_nibble_packing_low_nibble_first():
    codes = torch.tensor([[1, 2, 3, 4, 0xF, 0x8]], dtype=torch.uint8)
    packed = nvfp4.pack(codes)
    assert packed.tolist() == [[0x21, 0x43, 0x8F]]
    assert torch.equal(nvfp4.unpack(packed), codes)


def test_nvfp4_quantize_hand_computed():
    row = [6.0, -3.0, 1.0, 0.5, 0.0, 2.0, 4.0, 1.5, -6.0, 0.0, 0.0, 0.0, -0.5, 1.0, 3.0, 4.0]
    x = torch.tensor([row, [v / 2 for v in row]])
    q = nvfp4.quantize(x)
    assert q.data.dtype == torch.uint8 and q.data.shape == (2, 8)
    assert q.scale.dtype == torch.float8_e4m3fn and q.scale.shape == (2, 1)
    assert q.global_scale.shape == () and q.global_scale.dtype == torch.float32
    torch.testing.assert_close(q.global_scale, torch.tensor(6.0) / (448 * 6), rtol=1e-7, atol=0)
    # block scale (in units of the global scale) = block amax / 6 / global = 448 and 224
    assert q.scale.float()[:, 0].tolist() == [448.0, 224.0]
    codes = nvfp4.unpack(q.data)
    want = [7, 8 | 5, 2, 1, 0, 4, 6, 3, 8 | 7, 0, 0, 0, 8 | 1, 2, 5, 6]
    assert codes[0].tolist() == want and codes[1].tolist() == want
    assert q.data[0, 0].item() == (8 | 5) << 4 | 7  # element 0 low nibble, element 1 high nibble
    d = nvfp4.dequantize(q, torch.float32)
    torch.testing.assert_close(d, x, rtol=1e-6, atol=0)


def test_nvfp4_global_scale_is_tensor_amax_over_2688():
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(2)) * 3
    q = nvfp4.quantize(w)
    torch.testing.assert_close(q.global_scale, w.abs().amax() / (448 * 6), rtol=1e-6, atol=0)
    assert q.scale.shape == (64, 8)
    assert q.scale.float().max().item() == 448.0  # the block holding the tensor's amax


# ------------------------------------------------------------------ all formats


@pytest.mark.parametrize("name", ALL)
def test_zero_rows_and_zero_tensor_give_no_nan(name):
    f = FORMATS[name]
    w = torch.randn(4, 256, generator=torch.Generator().manual_seed(3))
    w[1] = 0
    for t in (w, torch.zeros(3, 256)):
        for qz, dz in ((f.quantize_weight, f.dequantize_weight), (f.quantize_activation, f.dequantize_activation)):
            q = qz(t)
            assert torch.isfinite(q.scale.float()).all()
            d = dz(q, torch.float32)
            assert torch.isfinite(d).all(), name
            assert d[1].abs().sum().item() == 0


@pytest.mark.parametrize("name,k,block", [("fp8_block128", 100, 128), ("mxfp8", 48, 32), ("nvfp4", 24, 16)])
def test_k_not_divisible_by_block_names_the_block(name, k, block):
    f = FORMATS[name]
    for fn in (f.quantize_weight, f.quantize_activation):
        with pytest.raises(ValueError, match=f"{k} is not divisible by the block size {block}"):
            fn(torch.randn(8, k))


def test_non_2d_input_is_refused():
    with pytest.raises(ValueError, match="2-D"):
        int8.quantize(torch.randn(2, 3, 4))


# weight round trip: relative Frobenius error on w ~ N(0, 1) [256, 512], measured (seed 5):
# int8 0.0079, fp8 0.0264, fp8_block128 0.0265, mxfp8 0.0292, nvfp4 0.0953.
WEIGHT_BOUND = {"int8": 0.010, "fp8": 0.032, "fp8_block128": 0.032, "mxfp8": 0.035, "nvfp4": 0.11}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_round_trip_error_bound(name, dtype):
    f = FORMATS[name]
    w = torch.randn(256, 512, generator=torch.Generator().manual_seed(5)).to(dtype)
    q = f.quantize_weight(w)
    d = f.dequantize_weight(q, dtype)
    assert d.dtype == dtype and d.shape == w.shape
    err = ((d.float() - w.float()).norm() / w.float().norm()).item()
    assert err < WEIGHT_BOUND[name], (name, dtype, err)
    # re-quantizing the dequantized weight is (nearly) idempotent
    d2 = f.dequantize_weight(f.quantize_weight(d.float()), torch.float32)
    assert ((d2 - d.float()).norm() / d.float().norm()).item() < WEIGHT_BOUND[name] / 2


@pytest.mark.parametrize("name", ALL)
def test_activation_per_token_scale_shapes(name):
    f = FORMATS[name]
    x = torch.randn(5, 256)
    q = f.quantize_activation(x)
    want = {"int8": (5, 1), "fp8": (5, 1), "fp8_block128": (5, 2), "mxfp8": (5, 8), "nvfp4": (5, 16)}[name]
    assert tuple(q.scale.shape) == want
    # per token: scaling one token does not change the others' codes
    x2 = x.clone()
    x2[0] *= 50
    q2 = f.quantize_activation(x2)
    if name != "nvfp4":  # nvfp4's global scale is per tensor
        assert torch.equal(q.data[1:].view(torch.uint8), q2.data[1:].view(torch.uint8))


# ------------------------------------------------------------------ linear-layer error bound

OUTPUT_BOUND = {"int8": 0.055, "fp8": 0.042, "fp8_block128": 0.040, "mxfp8": 0.058, "nvfp4": 0.155}
MEASURED = {}


def _outlier_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 1024, generator=g)
    x[:, [3, 100, 517, 900]] *= 20
    w = torch.randn(512, 1024, generator=g) * 0.02
    b = torch.randn(512, generator=g) * 0.02
    return x, w, b


@pytest.mark.parametrize("name", ALL)
def test_linear_error_with_outlier_channels(name):
    f = FORMATS[name]
    x, w, b = _outlier_problem()
    y_ref = x @ w.t() + b
    y = reference.linear(x, f.quantize_weight(w), b, f)
    err = ((y - y_ref).norm() / y_ref.norm()).item()
    MEASURED[name] = err
    print(f"\n[error bound] {name:13s} output rel err {err:.4f} (bound {OUTPUT_BOUND[name]})")
    assert err < OUTPUT_BOUND[name]
    # and far from a broken kernel: a random weight gives error ~1.4
    assert err > 1e-4  # not accidentally comparing the reference with itself


@pytest.mark.parametrize("name,bound", [("int8", 0.015), ("fp8", 0.045)])
def test_linear_error_without_outliers(name, bound):
    f = FORMATS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1024, generator=g)
    w = torch.randn(512, 1024, generator=g) * 0.02
    y_ref = x @ w.t()
    err = ((reference.linear(x, f.quantize_weight(w), None, f) - y_ref).norm() / y_ref.norm()).item()
    print(f"\n[error bound, no outliers] {name} {err:.4f}")
    assert err < bound
