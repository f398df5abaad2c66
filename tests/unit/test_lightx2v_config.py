"""LightX2V config parsing: both generations of field names, path resolution, portability, bad configs.

The configs are LightX2V's own (configs/quantization/wan_i2v.json before and after the 2025-10
rename, PR #375; configs/distill/wan22/wan_moe_i2v_distill_quant.json; the seed guide's mixed strategy).
"""
from __future__ import annotations

import json

import pytest

from quant.lightx2v.config import ConfigError, parse_config

BASE = {"infer_steps": 40, "target_video_length": 81, "self_attn_1_type": "sage_attn2", "enable_cfg": True}


@pytest.fixture
def models(tmp_path):
    """A model folder holding a DiT folder and LightX2V's T5 / CLIP file names."""
    (tmp_path / "int8_dit").mkdir()
    for name in ("models_t5_umt5-xxl-enc-fp8.pth", "models_clip_open-clip-xlm-roberta-large-vit-huge-14-int8.pth",
                 "wan2.2_high.safetensors", "wan2.2_low.safetensors"):
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def test_old_generation_mm_config(models):
    """configs/quantization/wan_i2v.json before PR #375: mm_config.mm_type long name."""
    cfg = parse_config({**BASE, "dit_quantized_ckpt": "int8_dit",
                        "mm_config": {"mm_type": "W-int8-channel-sym-A-int8-channel-sym-dynamic-Vllm",
                                      "weight_auto_quant": False, "extra": 1}}, [str(models)])
    assert cfg.dit.quantized and cfg.dit.scheme.startswith("int8") and cfg.dit.scheme_field == "mm_config.mm_type"
    assert cfg.dit.ckpt == str(models / "int8_dit") and cfg.dit.ckpt_field == "dit_quantized_ckpt"
    assert cfg.unused == ("enable_cfg", "infer_steps", "mm_config.extra", "target_video_length")


def test_new_generation_and_mixed_strategy(models):
    """Short names; the seed guide's mixed strategy (int8 DiT, fp8 T5, int8 CLIP); default T5/CLIP file names."""
    cfg = parse_config({**BASE, "dit_quantized": True, "dit_quant_scheme": "int8-torch",
                        "dit_quantized_ckpt": str(models / "int8_dit"),
                        "t5_quantized": True, "t5_quant_scheme": "fp8",
                        "clip_quantized": True, "clip_quant_scheme": "int8"}, [str(models)])
    assert (cfg.dit.scheme, cfg.t5.scheme, cfg.clip.scheme) == ("int8-torch", "fp8", "int8")
    assert cfg.t5.ckpt.endswith("models_t5_umt5-xxl-enc-fp8.pth")
    assert cfg.clip.ckpt.endswith("models_clip_open-clip-xlm-roberta-large-vit-huge-14-int8.pth")
    assert all(m.startswith("config field 'self_attn_1_type'") for m in cfg.messages)  # sage_attn2 needs a GPU


def test_wan22_experts_and_relative_subpaths(models):
    """wan_moe_i2v_distill_quant.json names files under `lightx2v/...`: found by base name in a model folder."""
    cfg = parse_config({"dit_quantized": True, "dit_quant_scheme": "fp8-torch",
                        "high_noise_quantized_ckpt": "lightx2v/Wan2.2-Distill-Models/wan2.2_high.safetensors",
                        "low_noise_quantized_ckpt": "lightx2v/Wan2.2-Distill-Models/wan2.2_low.safetensors"},
                       [str(models)])
    assert cfg.high_noise.ckpt.endswith("wan2.2_high.safetensors") and cfg.low_noise.scheme == "fp8-torch"
    assert cfg.dit.ckpt is None


def test_missing_kernel_runs_same_format_with_message():
    """A config written on a vllm / sgl / NPU machine runs here on the format's fastest kernel."""
    cfg = parse_config({"dit_quantized": True, "dit_quant_scheme": "fp8-sgl",
                        "t5_quantized": True, "t5_quant_scheme": "int8-npu"})
    assert cfg.dit.scheme.startswith("fp8") and cfg.t5.scheme == "int8"
    assert any("'dit_quant_scheme': 'fp8-sgl' needs the sgl kernel" in m for m in cfg.messages)
    assert any("'t5_quant_scheme': 'int8-npu' has no kernel in this pack" in m for m in cfg.messages)


def test_json_text_and_file(tmp_path, models):
    raw = {"t5_quantized": True, "t5_quant_scheme": "fp8", "t5_quantized_ckpt": "models_t5_umt5-xxl-enc-fp8.pth"}
    assert parse_config(json.dumps(raw), [str(models)]).t5.ckpt.endswith("fp8.pth")
    path = models / "wan_i2v.json"
    path.write_text(json.dumps(raw))
    assert parse_config(str(path)).t5.ckpt == str(models / "models_t5_umt5-xxl-enc-fp8.pth")  # beside the config


def test_unquantized_uses_original_ckpt(models):
    cfg = parse_config({"t5_quantized": False, "t5_quant_scheme": "fp8",
                        "t5_quantized_ckpt": "nowhere.pth", "t5_original_ckpt": "models_t5_umt5-xxl-enc-fp8.pth"},
                       [str(models)])
    assert not cfg.t5.quantized and cfg.t5.scheme == "Default" and cfg.t5.ckpt_field == "t5_original_ckpt"


@pytest.mark.parametrize("raw,match", [
    ({"t5_quantized": True, "t5_quant_scheme": "int9"}, "config field 't5_quant_scheme': unknown scheme 'int9'"),
    ({"clip_quantized": True, "clip_quant_scheme": "nvfp4"}, "config field 'clip_quant_scheme': 'nvfp4'"),
    ({"dit_quantized": True}, "config field 'dit_quant_scheme' is missing"),
    ({"t5_quantized": "yes"}, "config field 't5_quantized' must be true or false"),
    ({"dit_quantized": True, "dit_quant_scheme": "int8-torch", "dit_quantized_ckpt": "/no/such/dir"},
     "config field 'dit_quantized_ckpt': '/no/such/dir' does not exist"),
    ({"clip_quantized": True, "clip_quant_scheme": "int8", "clip_quantized_ckpt": "missing.pth"},
     "config field 'clip_quantized_ckpt': 'missing.pth' not found"),
    ({"dit_quantized": False, "mm_config": {"mm_type": "W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Sgl"}},
     "'mm_config.mm_type' and 'dit_quantized' disagree"),
    ({"mm_config": "int8"}, "config field 'mm_config' must be an object"),
    ("[1, 2]", "config must be a JSON object"),
    ("{not json", "config is not valid JSON"),
    ("/no/such/config.json", "config file '/no/such/config.json' not found"),
])
def test_bad_configs_name_the_field(raw, match, models):
    with pytest.raises(ConfigError, match=match.replace("(", r"\(").replace(")", r"\)")):
        parse_config(raw, [str(models)])
