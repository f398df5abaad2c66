"""LLMC advanced_ptq smoothing folded into the linears gives LightX2V's smoothed result.

A tiny Wan block input path: m0 = LN(x) * (1 + scale) + shift feeds self_attn.q. LLMC smooths with
SmoothQuant scales s (scale_ln_fcs: affine weight = bias = 1/s, weight columns * s); LightX2V
computes q = W' @ (LN(x) * ((1 + scale) * a_w) + shift * a_b) (transformer_infer.infer_self_attn).
"""
from __future__ import annotations

import pytest
import torch

from quant.formats import QTensor, get_format
from quant.kernels.reference import linear as ref_linear
from quant.lightx2v.smoothing import fold_smoothing, has_smoothing

D, N, T = 64, 48, 16


def _setup(gen, fmt_name="int8"):
    """Float truth (W, b, m0) and the LLMC-smoothed, quantized checkpoint of the same layer."""
    x = torch.randn(T, D, generator=gen)
    scale, shift = torch.randn(D, generator=gen) * 0.1, torch.randn(D, generator=gen) * 0.1
    m0 = torch.nn.functional.layer_norm(x, (D,)) * (1 + scale) + shift
    m0[:, :4] *= 30  # activation outlier channels: what smoothing is for
    w, b = torch.randn(N, D, generator=gen) * 0.05, torch.randn(N, generator=gen) * 0.01
    s = (m0.abs().amax(0).sqrt() / w.abs().amax(0).sqrt()).clamp(min=1e-5)  # SmoothQuant, alpha = 0.5
    fmt = get_format(fmt_name)
    qs = fmt.quantize_weight(w * s)  # LLMC: fc.weight.mul_(scales)
    sd = {"blocks.0.affine_norm1.weight": 1 / s, "blocks.0.affine_norm1.bias": 1 / s}  # ln.weight/bias.div_(scales)
    for n in "qkv":  # the three linears after norm1 (same weights here; q is the one checked)
        sd.update({f"blocks.0.self_attn.{n}.weight": qs.data, f"blocks.0.self_attn.{n}.weight_scale": qs.scale.bfloat16(),
                   f"blocks.0.self_attn.{n}.bias": b})
    return w, b, m0, s, sd, fmt


def _run(sd, fmt, x):
    q = QTensor(sd["blocks.0.self_attn.q.weight"], sd["blocks.0.self_attn.q.weight_scale"].float())
    return ref_linear(x, q, sd["blocks.0.self_attn.q.bias"], fmt)


@pytest.mark.parametrize("fmt_name", ["int8", "fp8"])
def test_folded_equals_smoothed_model(gen, fmt_name):
    w, b, m0, s, sd, fmt = _setup(gen, fmt_name)
    truth = m0 @ w.t() + b
    smoothed = _run(sd, fmt, m0 / s)  # LightX2V: the norm output times the affine factors
    folded_sd = fold_smoothing(sd, fmt)
    assert not has_smoothing(folded_sd) and has_smoothing(sd)
    folded = _run(folded_sd, fmt, m0)  # ComfyUI: the plain norm output
    ignored = _run(sd, fmt, m0)  # the factors dropped
    err = lambda y: ((y - truth).norm() / truth.norm()).item()
    assert err(smoothed) < 0.05 and err(folded) < 0.05
    assert ((folded - smoothed).norm() / truth.norm()).item() < 0.05
    assert err(ignored) > 10 * err(folded)


def test_float_weights_fold_exactly(gen):
    w, b, _, s, _, _ = _setup(gen)
    sd = {"blocks.3.affine_norm3.weight": 1 / s, "blocks.3.affine_norm3.bias": 1 / s,
          "blocks.3.ffn.0.weight": w * s, "blocks.3.ffn.0.bias": b}
    out = fold_smoothing(sd, None)
    assert torch.allclose(out["blocks.3.ffn.0.weight"], w, rtol=1e-5, atol=1e-7)
    assert set(out) == {"blocks.3.ffn.0.weight", "blocks.3.ffn.0.bias"}


def test_affine_norm1_folds_into_q_k_v(gen):
    """affine_norm1 feeds self_attn.q, k and v; cross_attn and ffn stay untouched."""
    sd = {f"model.diffusion_model.blocks.0.{n}.weight": torch.ones(4, 8) for n in
          ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "ffn.0")}
    sd["model.diffusion_model.blocks.0.affine_norm1.weight"] = torch.full((8,), 2.0)
    out = fold_smoothing(sd, None)
    doubled = {k for k, v in out.items() if v.eq(2).all()}
    assert doubled == {f"model.diffusion_model.blocks.0.self_attn.{n}.weight" for n in "qkv"}


def test_unequal_weight_and_bias_factors_refused(gen):
    _, _, _, s, sd, fmt = _setup(gen)
    sd["blocks.0.affine_norm1.bias"] = 2 / s
    with pytest.raises(ValueError, match="affine_norm1.weight' and .*affine_norm1.bias' differ"):
        fold_smoothing(sd, fmt)


def test_missing_linear_is_an_error():
    with pytest.raises(ValueError, match="blocks.0.ffn.0.weight' is missing"):
        fold_smoothing({"blocks.0.affine_norm3.weight": torch.ones(4)}, None)
