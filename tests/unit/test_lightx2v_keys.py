"""Wan-native T5 / CLIP names (LightX2V .pth files) map onto ComfyUI's real umT5 / clip_vision modules.

The ComfyUI checks build `comfy.text_encoders.t5.T5` and `comfy.clip_model.CLIPVisionModelProjection`
with tiny configs on CPU and load the mapped (dequantized) weights with strict=True: same key set,
same shapes. They are skipped when no ComfyUI checkout is found (COMFYUI_PATH or ~/comfy/ComfyUI).
"""
from __future__ import annotations

import math
import os
import re
import sys

import lightx2v_synth as synth
import pytest
import torch

from quant.formats import QTensor, get_format
from quant.lightx2v.keys import is_native, to_comfy

T5_CFG = dict(d_ff=96, d_kv=16, d_model=64, num_heads=4, num_layers=2, vocab_size=128,
              dense_act_fn="gelu_pytorch_tanh", is_gated_act=True, model_type="umt5")
CLIP_CFG = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2, patch_size=14,
                image_size=28, num_channels=3, projection_dim=32, hidden_act="gelu", model_type="clip_vision_model")


def _comfy():
    """ComfyUI's modules on CPU, or skip saying how to provide a checkout."""
    root = os.environ.get("COMFYUI_PATH") or os.path.expanduser("~/comfy/ComfyUI")
    if not os.path.isdir(os.path.join(root, "comfy")):
        pytest.skip(f"no ComfyUI checkout at {root}; set COMFYUI_PATH to run the real-module checks")
    if root not in sys.path:
        sys.path.insert(0, root)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import comfy.clip_model
    import comfy.model_management
    import comfy.ops
    import comfy.text_encoders.t5
    return comfy


def _dequantized(sd: dict, fmt_name: str) -> dict:
    """Float state dict: every `weight` + `weight_scale` pair dequantized, scales removed."""
    fmt, out = get_format(fmt_name), {}
    for k, v in sd.items():
        if k.endswith(".weight_scale"):
            continue
        s = sd.get(k + "_scale")
        out[k] = fmt.dequantize_weight(QTensor(v, s.float()), torch.float32) if s is not None else v.float()
    return out


def _quantized_pair(family, make, gen, linear_type="int8"):
    return synth.quantize_model(make(gen), family, linear_type, torch.bfloat16)


@pytest.mark.parametrize("linear_type", ["int8", "fp8"])
def test_t5_keys_equal_comfy_umt5(gen, linear_type):
    comfy = _comfy()
    model = comfy.text_encoders.t5.T5(T5_CFG, torch.float32, "cpu", comfy.ops.manual_cast)
    mapped = to_comfy(_quantized_pair("wan_t5", synth.wan_t5_state_dict, gen, linear_type), "wan_t5")
    scales = {k for k in mapped if k.endswith(".weight_scale")}
    linears = re.compile(r".*\.(SelfAttention\.[qkvo]|DenseReluDense\.w\w+)\.weight")
    assert {k[: -len("_scale")] for k in scales} == {k for k in model.state_dict() if linears.fullmatch(k)}
    model.load_state_dict(_dequantized(mapped, linear_type), strict=True)


@pytest.mark.parametrize("linear_type", ["int8", "fp8"])
def test_clip_keys_equal_comfy_clip_vision(gen, linear_type):
    comfy = _comfy()
    model = comfy.clip_model.CLIPVisionModelProjection(CLIP_CFG, torch.float32, "cpu", comfy.ops.manual_cast)
    q = synth.quantize_model(synth.wan_clip_state_dict(gen), "wan_clip", linear_type, torch.float16)
    mapped = to_comfy(q, "wan_clip")
    model.load_state_dict(_dequantized(mapped, linear_type), strict=True)


def test_t5_ffn_gate_is_wi_0(gen):
    """Wan's FFN is fc2(fc1(x) * gelu_tanh(gate.0(x))); ComfyUI's gated FFN with the mapped weights equals it."""
    comfy = _comfy()
    sd = {k: v.float() for k, v in synth.wan_t5_state_dict(gen).items()}
    model = comfy.text_encoders.t5.T5(T5_CFG, torch.float32, "cpu", comfy.ops.manual_cast)
    model.load_state_dict(to_comfy(sd, "wan_t5"), strict=True)
    x = torch.randn(2, 5, 64, generator=gen)
    gelu = lambda t: 0.5 * t * (1 + torch.tanh(math.sqrt(2 / math.pi) * (t + 0.044715 * t ** 3)))
    p = "blocks.0.ffn."
    want = (x @ sd[p + "fc1.weight"].t() * gelu(x @ sd[p + "gate.0.weight"].t())) @ sd[p + "fc2.weight"].t()
    got = model.encoder.block[0].layer[1].DenseReluDense(x)
    assert torch.allclose(got, want, atol=1e-5)


def test_clip_qkv_split_matches_fused(gen):
    """q/k/v of the split equal the thirds of the fused to_qkv output (float, int8 and fp8 weights)."""
    src = synth.wan_clip_state_dict(gen, dtype=torch.float32)
    x = torch.randn(4, 64, generator=gen)
    fused = x @ src["visual.transformer.0.attn.to_qkv.weight"].t() + src["visual.transformer.0.attn.to_qkv.bias"]
    for linear_type in ("int8", "fp8"):
        deq = _dequantized(to_comfy(synth.quantize_model(src, "wan_clip", linear_type), "wan_clip"), linear_type)
        parts = [x @ deq[f"vision_model.encoder.layers.0.self_attn.{n}_proj.weight"].t()
                 + deq[f"vision_model.encoder.layers.0.self_attn.{n}_proj.bias"] for n in "qkv"]
        assert torch.allclose(torch.cat(parts, -1), fused, atol=0.05 * fused.abs().max().item())


def test_clip_value_transforms(gen):
    src = synth.wan_clip_state_dict(gen)
    out = to_comfy(src, "wan_clip")
    assert torch.equal(out["vision_model.embeddings.class_embedding"], src["visual.cls_embedding"].reshape(-1))
    assert torch.equal(out["vision_model.embeddings.position_embedding.weight"], src["visual.pos_embedding"][0])
    assert torch.equal(out["visual_projection.weight"], src["visual.head"].t())
    assert not any(k.startswith("textual") or k == "log_scale" for k in out)


def test_block128_qkv_scales():
    """Block-128 scales split when each third is a multiple of 128 rows; otherwise a clear error."""
    fmt = get_format("fp8_block128")
    w = torch.randn(3 * 128, 128)
    q = fmt.quantize_weight(w)
    sd = {"visual.transformer.0.attn.to_qkv.weight": q.data, "visual.transformer.0.attn.to_qkv.weight_scale": q.scale}
    out = to_comfy(sd, "wan_clip")
    assert out["vision_model.encoder.layers.0.self_attn.k_proj.weight_scale"].shape == (1, 1)
    bad_w = fmt.quantize_weight(torch.randn(3 * 64, 128))
    bad = {"visual.transformer.0.attn.to_qkv.weight": bad_w.data, "visual.transformer.0.attn.to_qkv.weight_scale": bad_w.scale}
    with pytest.raises(ValueError, match="to_qkv.weight_scale.*not a multiple of 128"):
        to_comfy(bad, "wan_clip")


def test_comfy_names_pass_through_and_unknown_keys_fail(gen):
    comfy_sd = {"encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(2, 2)}
    assert to_comfy(comfy_sd, "wan_t5") is comfy_sd and not is_native(comfy_sd, "wan_t5")
    sd = synth.wan_t5_state_dict(gen)
    sd["blocks.0.attn.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="blocks.0.attn.extra.weight"):
        to_comfy(sd, "wan_t5")
    with pytest.raises(ValueError, match="no LightX2V key mapping"):
        to_comfy(sd, "wan_dit")
