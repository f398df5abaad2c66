"""GPU check of the pack's quantized attention (quant.attention.triton) against fp32 SDPA (CUDA only).

    python3 -m pytest -q tests/gpu/test_attention_kernel.py

Both modes, bf16 and fp16, head dims 64/96/128, ragged Lq/Lk (not multiples of the tiles), several
batch x heads; inputs as ComfyUI hands them ([B, L, H*D] viewed as [B, H, L, D]) and contiguous, which
must give the same output; the allocator's free memory is filled with NaN first, so an output element
the kernel leaves unwritten shows. Bounds (relative L2 vs SDPA on the fp32 inputs): fp8 0.05, accurate 0.03.
"""
import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from quant.attention.triton import quantized_attention, unsupported_reason

BOUND = {False: 0.05, True: 0.03}
SHAPES = [(1, 2, 70, 130), (2, 3, 1000, 777), (1, 40, 4097, 4095), (2, 5, 300, 512), (1, 4, 129, 64)]


def _inputs(b, h, lq, lk, d, g):
    """fp32 [B, L, H*D] buffers: q ~ 2 N(0,1), k ~ N(0,1) + per-channel offset ~ 3 N(0,1), v ~ N(0,1)."""
    q = 2 * torch.randn(b, lq, h * d, device="cuda", generator=g)
    k = torch.randn(b, lk, h * d, device="cuda", generator=g) + 3 * torch.randn(1, 1, h * d, device="cuda", generator=g)
    v = torch.randn(b, lk, h * d, device="cuda", generator=g)
    return q, k, v


def _view(x, h):
    b, l, hd = x.shape
    return x.view(b, l, h, hd // h).transpose(1, 2)


def _poison():
    """Fill the caching allocator's free blocks with NaN so that torch.empty hands out NaN memory."""
    junk = torch.full((64 << 20,), float("nan"), device="cuda")
    del junk


@pytest.mark.parametrize("accurate", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [64, 96, 128])
def test_matches_sdpa(accurate, dtype, d):
    g = torch.Generator(device="cuda").manual_seed(d)
    for b, h, lq, lk in SHAPES:
        q, k, v = (_view(t, h) for t in _inputs(b, h, lq, lk, d, g))
        ref = F.scaled_dot_product_attention(q, k, v)
        qs, ks, vs = (t.to(dtype) for t in (q, k, v))
        assert unsupported_reason(qs, ks, vs) is None
        _poison()
        out = quantized_attention(qs, ks, vs, accurate=accurate)
        assert out.shape == (b, h, lq, d) and out.dtype == dtype
        assert out.transpose(1, 2).is_contiguous()  # storage [B, Lq, H, D]
        assert torch.isfinite(out).all(), (b, h, lq, lk)
        err = ((out.float() - ref).norm() / ref.norm()).item()
        print(f"d={d} {dtype} accurate={accurate} {(b, h, lq, lk)}: rel err {err:.4f}")
        assert err <= BOUND[accurate], (b, h, lq, lk, err)
        _poison()
        again = quantized_attention(qs.contiguous(), ks.contiguous(), vs.contiguous(), accurate=accurate)
        assert torch.equal(again, out), "strided and contiguous inputs differ"


def test_scale_argument():
    g = torch.Generator(device="cuda").manual_seed(7)
    q, k, v = (_view(t, 4).bfloat16() for t in _inputs(1, 4, 200, 300, 128, g))
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=0.05)
    out = quantized_attention(q, k, v, scale=0.05, accurate=True)
    assert ((out.float() - ref).norm() / ref.norm()).item() <= BOUND[True]


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                    reason="the Gluon kernel is sm90 only")
@pytest.mark.parametrize("accurate", [False, True])
def test_hopper_kernel_runs_and_agrees_with_the_triton_kernel(accurate):
    """On sm90 both modes at head dim 128 with more than 128 keys run hopper.py (test_matches_sdpa then checks
    them against SDPA); the output is the Triton kernel's up to accumulation order, with the Triton kernel
    quantizing the same way (K per 128-key block, Q by the pre-pass)."""
    from quant.attention.triton import configs, hopper_reason, kernel

    same_blocks = configs.Config(64, 128, 4, 3, False, q_prepass=True)

    g = torch.Generator(device="cuda").manual_seed(3)
    for b, h, lq, lk in [(1, 4, 1000, 777), (2, 3, 129, 4097), (1, 2, 300, 129)]:
        q, k, v = (_view(t, h).bfloat16() for t in _inputs(b, h, lq, lk, 128, g))
        assert hopper_reason(q, k, accurate) is None, hopper_reason(q, k, accurate)
        _poison()
        out = quantized_attention(q, k, v, accurate=accurate)
        tri = kernel.attention(q, k, v, 128 ** -0.5, accurate, same_blocks)
        assert torch.isfinite(out).all()
        diff = ((out.float() - tri.float()).norm() / tri.float().norm()).item()
        print(f"hopper vs triton accurate={accurate} {(b, h, lq, lk)}: rel diff {diff:.5f}")
        assert diff <= 0.01, (b, h, lq, lk, diff)
    short = torch.empty(1, 1, 128, 128, device="cuda", dtype=torch.bfloat16)
    assert hopper_reason(short, short, accurate) is not None  # one key tile: the Triton kernel
