"""LightX2V's quantized files in every layout load through quant.checkpoints.read and quant.linear.

Files are written by tests/unit/lightx2v_synth.py exactly as tools/convert/converter.py does
(key names, scale at `key + "_scale"` in the source dtype, non-linear tensors cast).
"""
from __future__ import annotations

import os

import lightx2v_synth as synth
import pytest
import torch

from quant.checkpoints.read import checkpoint_files, load_state_dict
from quant.formats import QTensor, get_format
from quant.linear import QuantLinear, normalize_state_dict

# max |dequant - w| / row absmax: half a step, plus the source dtype's rounding (LightX2V divides
# and keeps the scale in the source dtype, so a bf16 source adds up to one bf16 ulp, 2^-8).
BOUND = {"int8": 0.5 / 127, "fp8": 0.07}


def _bound(fmt_name: str, src: torch.Tensor) -> float:
    return BOUND[fmt_name] + (torch.finfo(src.dtype).eps if src.dtype != torch.float32 else 1e-6)


def _check_layers(sd, src, fmt_name):
    """Every quantized layer normalizes to the canonical layout and dequantizes close to the source."""
    fmt = get_format(fmt_name)
    qkeys = [k for k in sd if k.endswith(".weight") and k + "_scale" in sd]
    assert qkeys
    for k in qkeys:
        n, kk = src[k].shape
        layer = {"weight": sd[k], "weight_scale": sd[k + "_scale"]}
        normalize_state_dict(layer, "", fmt, kk, n)
        assert layer["weight_scale"].dtype == fmt.scale_dtype and layer["weight_scale"].shape == (n, 1)
        w = src[k].float()
        err = (fmt.dequantize_weight(QTensor(layer["weight"], layer["weight_scale"]), torch.float32) - w).abs().amax(1)
        assert (err <= _bound(fmt_name, src[k]) * w.abs().amax(1) + 1e-6).all(), k
    return qkeys


LAYOUTS = {
    "single": lambda sd, d: synth.save_single(sd, d, "wan2.1_i2v_480p_int8_lightx2v"),
    "save_by_block": lambda sd, d: synth.save_by_block(sd, d),
    "chunked": lambda sd, d: synth.save_chunked(sd, d, "converted", chunk_size=7),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("linear_type,src_dtype,non_linear", [
    ("int8", torch.bfloat16, torch.float32),   # readme 1.1: int8, --non_linear_dtype default fp32; bf16 scales
    ("fp8", torch.bfloat16, torch.bfloat16),   # readme 1.2: fp8 with --non_linear_dtype torch.bfloat16
    ("int8", torch.float32, torch.float32),    # fp32 source -> fp32 scales
])
def test_dit_layouts_load(tmp_path, gen, helpers, layout, linear_type, src_dtype, non_linear):
    src = helpers.wan_dit_state_dict(gen, dtype=src_dtype)
    q = synth.quantize_model(src, "wan_dit", linear_type, non_linear)
    assert q["blocks.0.self_attn.q.weight_scale"].dtype == src_dtype
    path = LAYOUTS[layout](q, str(tmp_path))
    sd, det = load_state_dict(path)
    assert det.layout == "lightx2v" and det.format == linear_type
    assert set(sd) == set(q)
    assert set(_check_layers(sd, src, linear_type)) == helpers.wan_dit_expected_quantized(src)


def test_save_by_block_files(tmp_path, gen, helpers):
    """The shards of a save_by_block folder are exactly the index's files (block_N + non_block)."""
    q = synth.quantize_model(helpers.wan_dit_state_dict(gen), "wan_dit", "int8")
    synth.save_by_block(q, str(tmp_path))
    names = sorted(os.path.basename(f) for f in checkpoint_files(str(tmp_path)))
    assert names == ["block_0.safetensors", "block_1.safetensors", "non_block.safetensors"]


def test_folder_without_index_reads_every_shard(tmp_path, gen, helpers):
    """LightX2V itself globs *.safetensors (base_model._load_quant_ckpt); a folder whose index was lost still loads."""
    q = synth.quantize_model(helpers.wan_dit_state_dict(gen), "wan_dit", "fp8")
    synth.save_by_block(q, str(tmp_path))
    os.remove(tmp_path / "diffusion_pytorch_model.safetensors.index.json")
    sd, det = load_state_dict(str(tmp_path))
    assert set(sd) == set(q) and det.format == "fp8"


def test_quant_linear_loads_bf16_scales(gen):
    """QuantLinear.load_state_dict takes LightX2V's bf16 [N, 1] scale and stores fp32."""
    w = torch.randn(32, 64, generator=gen).to(torch.bfloat16)
    wq, s = synth.quantize_weight(w, "int8")
    lin = QuantLinear(64, 32, bias=False, fmt=get_format("int8"), kernel="torch")
    lin.load_state_dict({"weight": wq, "weight_scale": s})
    assert lin.weight_scale.dtype == torch.float32
    x = torch.randn(3, 64, generator=gen)
    assert torch.allclose(lin(x), x @ w.float().t(), atol=0.05 * (x @ w.float().t()).abs().max().item())


@pytest.mark.parametrize("family,make,non_linear,name", [
    ("wan_t5", synth.wan_t5_state_dict, torch.bfloat16, "models_t5_umt5-xxl-enc-{}"),
    ("wan_clip", synth.wan_clip_state_dict, torch.float16, "models_clip_open-clip-xlm-roberta-large-vit-huge-14-{}"),
])
@pytest.mark.parametrize("linear_type", ["int8", "fp8"])
def test_text_pth_load(tmp_path, gen, family, make, non_linear, name, linear_type):
    """readme 1.3 / 1.4: T5 (bf16) and CLIP (fp16) .pth files, textual.* dropped by the converter."""
    src = make(gen)
    q = synth.quantize_model(src, family, linear_type, non_linear)
    assert not any(k.startswith("textual.") for k in q)
    path = synth.save_pth(q, str(tmp_path), name.format(linear_type))
    sd, det = load_state_dict(path)
    assert det.format == linear_type and set(sd) == set(q)
    _check_layers(sd, src, linear_type)
