"""quant/convert.py end to end: tiny generated Wan DiT / T5 / CLIP checkpoints, options, failures.

Peak memory is measured in test_convert_memory.py.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from quant.checkpoints import convert as convert_mod
from quant.checkpoints.read import detect, load_state_dict
from quant.checkpoints.convert import convert, main
from quant.formats import FORMATS
from quant.linear import QuantLinear
from quant.checkpoints.safetensors_file import read_header

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MM_TYPE_FOR = {"int8": "int8-vllm", "fp8": "fp8-triton", "fp8_block128": "fp8-b128-deepgemm",
               "mxfp8": "mxfp8", "nvfp4": "nvfp4"}


def _same_bytes(a, b):
    return a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape) and torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def _expected_keys(sd, quantized, fmt, layout="lightx2v"):
    keys = set()
    for k in sd:
        if k in quantized:
            base = k[: -len("weight")]
            keys |= {base + "weight", base + "weight_scale"}
            if fmt == "nvfp4":
                keys.add(base + ("weight_global_scale" if layout == "lightx2v" else "weight_scale_2"))
            if layout == "comfyui":
                keys.add(base + "comfy_quant")
        else:
            keys.add(k)
    return keys


def _check_output(dst, sd, quantized, fmt):
    out = load_file(dst)
    assert set(out) == _expected_keys(sd, quantized, fmt)
    f = FORMATS[fmt]
    for k, v in sd.items():
        if k in quantized:
            q = f.quantize_weight(v)
            base = k[: -len("weight")]
            assert _same_bytes(out[k], q.data), k
            assert out[base + "weight_scale"].shape == tuple(f.weight_scale_shape(*v.shape))
        else:
            assert _same_bytes(out[k], v), k  # copied unchanged: dtype, shape and bytes


# ------------------------------------------------------------------ Wan DiT


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_wan_dit_end_to_end(tmp_path, wan_dit_file, helpers, fmt):
    src, sd = wan_dit_file
    dst = str(tmp_path / "out.safetensors")
    r = convert(src, dst, MM_TYPE_FOR[fmt], progress=False)
    quantized = helpers.wan_dit_expected_quantized(sd)
    assert len(quantized) == 24
    assert r.quantized == 24 and r.copied == len(sd) - 24
    assert r.src_bytes == os.path.getsize(src) and r.dst_bytes == os.path.getsize(dst)
    assert helpers.tmp_leftovers(tmp_path) == []
    _check_output(dst, sd, quantized, fmt)
    _, meta = read_header(dst)
    assert meta["config"] == helpers.WAN_CONFIG and meta["format"] == "pt"
    info = json.loads(meta["comfyui_quantized"])
    assert info == {"mm_type": MM_TYPE_FOR[fmt], "format": fmt, "model_type": "wan_dit", "layout": "lightx2v"}
    # the written layer loads into QuantLinear and approximates the bf16 layer
    got = load_file(dst)
    base = "blocks.1.ffn.0."
    w = sd[base + "weight"]
    q = QuantLinear(w.shape[1], w.shape[0], bias=True, fmt=FORMATS[fmt], kernel="torch")
    q.load_state_dict({k[len(base):]: v for k, v in got.items() if k.startswith(base)})
    x = torch.randn(4, w.shape[1])
    y_ref = x @ w.float().t() + sd[base + "bias"].float()
    assert ((q(x) - y_ref).norm() / y_ref.norm()).item() < 0.15


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_converted_file_is_detected_and_loads(tmp_path, wan_dit_file, fmt):
    src, sd = wan_dit_file
    dst = str(tmp_path / "out.safetensors")
    convert(src, dst, MM_TYPE_FOR[fmt], progress=False)
    d = detect(dst)
    assert (d.layout, d.format, d.quantized_layers) == ("lightx2v", fmt, 24)
    got, _ = load_state_dict(dst)
    assert set(got) == set(load_file(dst))


def test_wan_dit_block128_real_sizes_detected(tmp_path, gen, helpers):
    """With Wan's real K (>= 256 here, 1536+ in the models) block-128 files are detected fine."""
    sd = helpers.wan_dit_state_dict(gen, dim=256, ffn=512, blocks=1)
    src, dst = str(tmp_path / "s.safetensors"), str(tmp_path / "d.safetensors")
    save_file(sd, src)
    convert(src, dst, "fp8-b128-triton", progress=False)
    assert detect(dst).format == "fp8_block128"


def test_wan_dit_with_comfyui_prefix(tmp_path, gen, helpers):
    sd = helpers.wan_dit_state_dict(gen, prefix="model.diffusion_model.")
    src, dst = str(tmp_path / "p.safetensors"), str(tmp_path / "q.safetensors")
    save_file(sd, src)
    r = convert(src, dst, "int8", progress=False)
    quantized = helpers.wan_dit_expected_quantized(sd)
    assert r.quantized == len(quantized) == 24
    _check_output(dst, sd, quantized, "int8")


def test_never_quantized_layers(tmp_path, wan_dit_file):
    src, sd = wan_dit_file
    dst = str(tmp_path / "out.safetensors")
    convert(src, dst, "int8", progress=False)
    out = load_file(dst)
    for k in ("patch_embedding.weight", "text_embedding.0.weight", "time_embedding.0.weight",
              "time_projection.1.weight", "head.head.weight", "img_emb.proj.1.weight", "blocks.0.modulation",
              "blocks.0.self_attn.norm_q.weight", "blocks.1.norm3.weight", "blocks.0.cross_attn.norm_k_img.weight"):
        assert out[k].dtype == torch.bfloat16 and k[: -len("weight")] + "weight_scale" not in out


@pytest.mark.parametrize("fmt", ["int8", "fp8", "nvfp4", "mxfp8"])
def test_comfyui_layout_keys(tmp_path, wan_dit_file, helpers, fmt):
    src, sd = wan_dit_file
    dst = str(tmp_path / "c.safetensors")
    convert(src, dst, fmt, layout="comfyui", progress=False)
    out = load_file(dst)
    quantized = helpers.wan_dit_expected_quantized(sd)
    assert set(out) == _expected_keys(sd, quantized, fmt, "comfyui")
    for k in set(sd) - quantized:
        assert _same_bytes(out[k], sd[k]), k


def test_comfyui_layout_refuses_block128(tmp_path, wan_dit_file):
    src, _ = wan_dit_file
    dst = str(tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match="no ComfyUI core format"):
        convert(src, dst, "fp8-b128-triton", layout="comfyui", progress=False)
    assert not os.path.exists(dst)


# ------------------------------------------------------------------ T5 and CLIP


def _t5_wan_native(g, dim=64, ffn=128, blocks=2):
    sd = {"token_embedding.weight": torch.randn(100, dim, generator=g), "norm.weight": torch.ones(dim)}
    for b in range(blocks):
        p = f"blocks.{b}."
        sd[p + "norm1.weight"] = torch.ones(dim)
        sd[p + "norm2.weight"] = torch.ones(dim)
        sd[p + "pos_embedding.embedding.weight"] = torch.randn(32, 4, generator=g)
        for lin in "qkvo":
            sd[p + f"attn.{lin}.weight"] = torch.randn(dim, dim, generator=g) * 0.05
        sd[p + "ffn.gate.0.weight"] = torch.randn(ffn, dim, generator=g) * 0.05
        sd[p + "ffn.fc1.weight"] = torch.randn(ffn, dim, generator=g) * 0.05
        sd[p + "ffn.fc2.weight"] = torch.randn(dim, ffn, generator=g) * 0.05
    q = {k for k in sd if re.search(r"attn\.[qkvo]\.weight$|ffn\.(gate\.0|fc1|fc2)\.weight$", k)}
    return sd, q


def _t5_hf(g, dim=64, ffn=128, blocks=2):
    sd = {"shared.weight": torch.randn(100, dim, generator=g), "encoder.final_layer_norm.weight": torch.ones(dim)}
    for b in range(blocks):
        p = f"encoder.block.{b}.layer."
        for lin in "qkvo":
            sd[p + f"0.SelfAttention.{lin}.weight"] = torch.randn(dim, dim, generator=g) * 0.05
        sd[p + "0.SelfAttention.relative_attention_bias.weight"] = torch.randn(32, 4, generator=g)
        sd[p + "0.layer_norm.weight"] = torch.ones(dim)
        sd[p + "1.DenseReluDense.wi_0.weight"] = torch.randn(ffn, dim, generator=g) * 0.05
        sd[p + "1.DenseReluDense.wi_1.weight"] = torch.randn(ffn, dim, generator=g) * 0.05
        sd[p + "1.DenseReluDense.wo.weight"] = torch.randn(dim, ffn, generator=g) * 0.05
        sd[p + "1.layer_norm.weight"] = torch.ones(dim)
    q = {k for k in sd if re.search(r"SelfAttention\.[qkvo]\.weight$|DenseReluDense\.(wi_0|wi_1|wo)\.weight$", k)}
    return sd, q


def _clip_open_clip(g, dim=64, blocks=2):
    sd = {"visual.patch_embedding.weight": torch.randn(dim, 3, 14, 14, generator=g) * 0.05,
          "visual.cls_embedding": torch.randn(1, 1, dim, generator=g), "visual.pos_embedding": torch.randn(1, 5, dim, generator=g),
          "visual.pre_norm.weight": torch.ones(dim), "visual.post_norm.weight": torch.ones(dim),
          "visual.head": torch.randn(dim, 32, generator=g), "log_scale": torch.tensor(4.6),
          "textual.encoder.layer.0.attention.self.query.weight": torch.randn(dim, dim, generator=g)}
    for b in range(blocks):
        p = f"visual.transformer.{b}."
        sd[p + "norm1.weight"] = torch.ones(dim)
        sd[p + "norm2.weight"] = torch.ones(dim)
        sd[p + "attn.to_qkv.weight"] = torch.randn(3 * dim, dim, generator=g) * 0.05
        sd[p + "attn.to_qkv.bias"] = torch.zeros(3 * dim)
        sd[p + "attn.proj.weight"] = torch.randn(dim, dim, generator=g) * 0.05
        sd[p + "mlp.0.weight"] = torch.randn(4 * dim, dim, generator=g) * 0.05
        sd[p + "mlp.2.weight"] = torch.randn(dim, 4 * dim, generator=g) * 0.05
    q = {k for k in sd if re.search(r"visual\.transformer\.\d+\.(attn\.to_qkv|attn\.proj|mlp\.0|mlp\.2)\.weight$", k)}
    return sd, q


@pytest.mark.parametrize("family,maker,model_type", [
    ("t5 wan-native", _t5_wan_native, "wan_t5"), ("t5 hf", _t5_hf, "wan_t5"), ("clip open-clip", _clip_open_clip, "wan_clip")])
@pytest.mark.parametrize("ext", [".safetensors", ".pth"])
@pytest.mark.parametrize("scheme,fmt", [("int8", "int8"), ("fp8-q8f", "fp8")])
def test_text_and_vision_encoders(tmp_path, gen, family, maker, model_type, ext, scheme, fmt):
    sd, quantized = maker(gen)
    src, dst = str(tmp_path / ("src" + ext)), str(tmp_path / "dst.safetensors")
    (save_file(sd, src) if ext == ".safetensors" else torch.save(sd, src))
    r = convert(src, dst, scheme, progress=False)
    assert r.quantized == len(quantized) > 0
    _check_output(dst, sd, quantized, fmt)
    assert json.loads(read_header(dst)[1]["comfyui_quantized"])["model_type"] == model_type


def test_model_type_explicit_and_undetectable(tmp_path):
    sd = {"foo.bar.weight": torch.randn(8, 16)}
    src, dst = str(tmp_path / "x.safetensors"), str(tmp_path / "y.safetensors")
    save_file(sd, src)
    with pytest.raises(ValueError, match="cannot tell the model type"):
        convert(src, dst, "int8", progress=False)
    with pytest.raises(ValueError, match="no layer"):
        convert(src, dst, "int8", model_type="wan_dit", progress=False)
    with pytest.raises(ValueError, match="unknown model type"):
        convert(src, dst, "int8", model_type="sdxl", progress=False)
    assert not os.path.exists(dst)


# ------------------------------------------------------------------ options


def test_keep_leaves_matching_layers_float(tmp_path, wan_dit_file, helpers):
    src, sd = wan_dit_file
    dst = str(tmp_path / "k.safetensors")
    r = convert(src, dst, "int8", keep=[r"ffn\.", r"blocks\.1\.cross_attn\.k_img"], progress=False)
    quantized = {k for k in helpers.wan_dit_expected_quantized(sd)
                 if "ffn." not in k and not k.startswith("blocks.1.cross_attn.k_img")}
    assert r.quantized == len(quantized) == 24 - 4 - 1
    _check_output(dst, sd, quantized, "int8")
    out = load_file(dst)
    assert out["blocks.0.ffn.0.weight"].dtype == torch.bfloat16
    assert "blocks.0.ffn.0.weight_scale" not in out


def test_refuses_existing_dst_without_overwrite(tmp_path, wan_dit_file):
    src, _ = wan_dit_file
    dst = tmp_path / "exists.safetensors"
    dst.write_bytes(b"precious")
    with pytest.raises(ValueError, match="--overwrite"):
        convert(src, str(dst), "int8", progress=False)
    assert dst.read_bytes() == b"precious"
    convert(src, str(dst), "int8", overwrite=True, progress=False)
    assert detect(str(dst)).format == "int8"


def test_never_writes_when_src_is_dst(tmp_path, wan_dit_file):
    src, _ = wan_dit_file
    before = open(src, "rb").read()
    mtime = os.stat(src).st_mtime_ns
    rel = os.path.relpath(src)
    for dst in (src, rel, os.path.join(os.path.dirname(src), ".", os.path.basename(src))):
        for overwrite in (False, True):
            with pytest.raises(ValueError, match="SRC"):
                convert(src, dst, "int8", overwrite=overwrite, progress=False)
    assert open(src, "rb").read() == before and os.stat(src).st_mtime_ns == mtime
    assert os.listdir(os.path.dirname(src)) == [os.path.basename(src)]


def test_refuses_already_quantized_source(tmp_path, wan_dit_file):
    src, _ = wan_dit_file
    q = str(tmp_path / "q.safetensors")
    convert(src, q, "int8", progress=False)
    with pytest.raises(ValueError, match="already quantized"):
        convert(q, str(tmp_path / "qq.safetensors"), "fp8", progress=False)
    assert not os.path.exists(tmp_path / "qq.safetensors")


@pytest.mark.parametrize("name", ["Default", "auto", "int4", ""])
def test_refuses_non_quantizing_mm_type(tmp_path, wan_dit_file, name):
    src, _ = wan_dit_file
    with pytest.raises(ValueError, match="does not name a quantized format"):
        convert(src, str(tmp_path / "o.safetensors"), name, progress=False)


def test_failure_leaves_no_tmp_and_keeps_old_dst(tmp_path, gen, helpers):
    sd = helpers.wan_dit_state_dict(gen)
    sd["blocks.1.ffn.2.weight"][3, 7] = float("nan")  # the last quantized tensor: fails late in the stream
    src = str(tmp_path / "nan.safetensors")
    save_file(sd, src)
    dst = tmp_path / "out.safetensors"
    with pytest.raises(ValueError, match=r"blocks\.1\.ffn\.2\.weight"):
        convert(src, str(dst), "int8", progress=False)
    assert not dst.exists()
    assert helpers.tmp_leftovers(tmp_path) == []
    dst.write_bytes(b"old")
    with pytest.raises(ValueError, match="NaN"):
        convert(src, str(dst), "int8", overwrite=True, progress=False)
    assert dst.read_bytes() == b"old"  # atomic: the old file survives a failed overwrite
    assert helpers.tmp_leftovers(tmp_path) == []


def test_progress_can_be_disabled(tmp_path, wan_dit_file, capfd):
    pytest.importorskip("tqdm")
    src, _ = wan_dit_file
    convert(src, str(tmp_path / "a.safetensors"), "int8", progress=True)
    err = capfd.readouterr().err
    assert "quantizing" in err and "tensor" in err
    convert(src, str(tmp_path / "b.safetensors"), "int8", progress=False)
    assert capfd.readouterr().err == ""
    assert main([src, str(tmp_path / "c.safetensors"), "--mm-type", "int8", "--no-progress"]) == 0
    out = capfd.readouterr()
    assert out.err == "" and "24 layers quantized" in out.out


def test_main_returns_2_with_error_message(tmp_path, wan_dit_file, capsys):
    src, _ = wan_dit_file
    dst = str(tmp_path / "o.safetensors")
    cases = [[str(tmp_path / "missing.safetensors"), dst, "--mm-type", "int8"],
             [src, dst, "--mm-type", "Default"],
             [src, src, "--mm-type", "int8", "--overwrite"],
             [src, dst, "--mm-type", "int8", "--model-type", "nope"]]
    for argv in cases:
        assert main(argv + ["--no-progress"]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert "Traceback" not in err
    assert not os.path.exists(dst)
    (tmp_path / "o.safetensors").write_bytes(b"x")
    assert main([src, dst, "--mm-type", "int8", "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path, wan_dit_file):
    src, _ = wan_dit_file
    dst = str(tmp_path / "o.safetensors")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "quant.checkpoints.convert", src, dst, "--mm-type", "fp8-vllm", "--no-progress"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert detect(dst).format == "fp8"
    assert "24 layers quantized" in r.stdout


def test_format_for_ignores_kernel_suffix():
    assert convert_mod.format_for("W-fp8-block128-sym-A-fp8-channel-group128-sym-dynamic-Deepgemm").name == "fp8_block128"
    assert convert_mod.format_for("int8-torchao").name == "int8"
    assert convert_mod.format_for("fp8").name == "fp8"
