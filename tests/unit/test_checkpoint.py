"""quant/checkpoint.py: detection from headers, loading every layout, shards, .pth, ComfyUI interop."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from quant.checkpoints import read as checkpoint
from quant.checkpoints.read import CheckpointError, detect, load_state_dict
from quant.checkpoints.convert import convert
from quant.formats import FORMATS
from quant.linear import QuantLinear

ALL = list(FORMATS)
N, K = 200, 256


def _same_bytes(a, b):
    return a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape) and torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def _float_weight(seed=0, n=N, k=K):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05


def _lightx2v_sd(fmt, layers=("blocks.0.self_attn.q.", "blocks.0.ffn.0."), scale_dtype=None):
    """A LightX2V-layout state dict: quantized weight + weight_scale per layer, float norms and biases."""
    sd = {"blocks.0.norm3.weight": torch.ones(K, dtype=torch.bfloat16)}
    for i, base in enumerate(layers):
        lin = torch.nn.Linear(K, N)
        lin.weight.data = _float_weight(i)
        q = QuantLinear.from_float(lin, FORMATS[fmt], kernel="torch")
        for k, v in q.state_dict().items():
            sd[base + k] = v.detach().clone()
        if scale_dtype is not None:
            sd[base + "weight_scale"] = sd[base + "weight_scale"].to(scale_dtype)
    return sd


# ------------------------------------------------------------------ detect


def test_detect_float(tmp_path):
    p = str(tmp_path / "f.safetensors")
    save_file({"blocks.0.self_attn.q.weight": torch.randn(8, 16).bfloat16(), "x.bias": torch.zeros(8)}, p)
    d = detect(p)
    assert (d.layout, d.format, d.quantized_layers) == ("float", None, 0)
    assert d.files == (p,)


@pytest.mark.parametrize("fmt", ALL)
def test_detect_lightx2v_each_format(tmp_path, fmt):
    p = str(tmp_path / f"{fmt}.safetensors")
    save_file(_lightx2v_sd(fmt), p)
    d = detect(p)
    assert (d.layout, d.format, d.quantized_layers) == ("lightx2v", fmt, 2)


@pytest.mark.parametrize("fmt", ["int8", "fp8", "fp8_block128"])
def test_detect_lightx2v_bf16_scales(tmp_path, fmt):
    p = str(tmp_path / "s.safetensors")
    save_file(_lightx2v_sd(fmt, scale_dtype=torch.bfloat16), p)
    assert detect(p).format == fmt


@pytest.mark.parametrize("fmt,k", [("mxfp8", 32), ("fp8_block128", 128)])
def test_detect_small_k_block_formats(tmp_path, fmt, k):
    lin = torch.nn.Linear(k, 256)
    q = QuantLinear.from_float(lin, FORMATS[fmt], kernel="torch")
    p = str(tmp_path / "small_k.safetensors")
    save_file({"blocks.0.ffn.2." + k_: v.contiguous() for k_, v in q.state_dict().items()}, p)
    assert detect(p).format == fmt


@pytest.mark.parametrize("fmt", ["int8", "fp8", "nvfp4", "mxfp8"])
def test_detect_comfyui_comfy_quant_tensors(tmp_path, wan_dit_file, fmt):
    src, sd = wan_dit_file
    dst = str(tmp_path / f"comfy_{fmt}.safetensors")
    convert(src, dst, {"int8": "int8", "fp8": "fp8", "nvfp4": "nvfp4", "mxfp8": "mxfp8"}[fmt], layout="comfyui",
            progress=False)
    d = detect(dst)
    assert (d.layout, d.format) == ("comfyui", fmt)
    assert d.quantized_layers == 24  # 2 blocks x (4 self_attn + 6 cross_attn incl. k_img, v_img + 2 ffn)


def test_detect_comfyui_from_metadata_header_alone(tmp_path):
    sd = _lightx2v_sd("int8")
    p = str(tmp_path / "meta.safetensors")
    meta = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": {
        "blocks.0.self_attn.q": {"format": "int8_tensorwise"}, "blocks.0.ffn.0": {"format": "int8_tensorwise"}}})}
    save_file(sd, p, metadata=meta)
    d = detect(p)
    assert (d.layout, d.format) == ("comfyui", "int8")


def _scaled_fp8_file(path, scales=(0.01, 0.002)):
    sd = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn), "norm.weight": torch.ones(K)}
    ws = {}
    for i, s in enumerate(scales):
        w = _float_weight(i)
        wq = (w / s).clamp(-448, 448).to(torch.float8_e4m3fn)
        sd[f"blocks.{i}.self_attn.q.weight"] = wq
        sd[f"blocks.{i}.self_attn.q.scale_weight"] = torch.tensor(s)
        sd[f"blocks.{i}.self_attn.q.scale_input"] = torch.tensor(1.0)
        ws[f"blocks.{i}.self_attn.q.weight"] = wq.float() * s
    save_file(sd, path)
    return ws


def test_detect_and_load_legacy_scaled_fp8(tmp_path):
    p = str(tmp_path / "legacy.safetensors")
    deq = _scaled_fp8_file(p)
    d = detect(p)
    assert (d.layout, d.format, d.quantized_layers) == ("scaled_fp8", "fp8", 2)
    sd, d2 = load_state_dict(p)
    assert d2.layout == "scaled_fp8"
    assert "scaled_fp8" not in sd
    assert not any(k.endswith((".scale_weight", ".scale_input")) for k in sd)
    for wkey, want in deq.items():
        s = sd[wkey + "_scale"]
        assert s.shape == (N, 1) and s.dtype == torch.float32
        q = QuantLinear(K, N, bias=False, fmt=FORMATS["fp8"], kernel="torch")
        q.load_state_dict({"weight": sd[wkey], "weight_scale": s})
        assert torch.equal(q.dequantize_weight(), want)


def test_detect_mixed_formats_is_an_error(tmp_path):
    sd = _lightx2v_sd("int8", layers=("a.",))
    sd.update(_lightx2v_sd("fp8", layers=("b.",)))
    p = str(tmp_path / "mixed.safetensors")
    save_file(sd, p)
    with pytest.raises(CheckpointError, match="mixes"):
        detect(p)


# ------------------------------------------------------------------ load_state_dict


@pytest.mark.parametrize("fmt", ALL)
def test_load_state_dict_lightx2v_round_trip(tmp_path, fmt):
    sd = _lightx2v_sd(fmt)
    p = str(tmp_path / "l.safetensors")
    save_file(sd, p)
    got, d = load_state_dict(p)
    assert d.format == fmt
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert _same_bytes(got[k], v), k
    # and it loads into QuantLinear, giving the same layer
    q = QuantLinear(K, N, bias=True, fmt=FORMATS[fmt], kernel="torch")
    q.load_state_dict({k[len("blocks.0.ffn.0."):]: v for k, v in got.items() if k.startswith("blocks.0.ffn.0.")})
    ref = QuantLinear(K, N, bias=True, fmt=FORMATS[fmt], kernel="torch")
    ref.load_state_dict({k[len("blocks.0.ffn.0."):]: v for k, v in sd.items() if k.startswith("blocks.0.ffn.0.")})
    x = torch.randn(3, K)
    assert torch.equal(q(x), ref(x))


def test_load_state_dict_float(tmp_path):
    sd = {"a.weight": torch.randn(4, 8).bfloat16(), "a.bias": torch.randn(4)}
    p = str(tmp_path / "f.safetensors")
    save_file(sd, p)
    got, d = load_state_dict(p)
    assert d.layout == "float"
    for k, v in sd.items():
        assert torch.equal(got[k], v)


def _shard(tmp_path, with_index=True):
    folder = tmp_path / "sharded"
    folder.mkdir()
    sd = _lightx2v_sd("int8", layers=("blocks.0.self_attn.q.", "blocks.1.self_attn.q."))
    a = {k: v for k, v in sd.items() if k.startswith("blocks.0.")}
    b = {k: v for k, v in sd.items() if not k.startswith("blocks.0.")}
    save_file(a, str(folder / "model-00001-of-00002.safetensors"))
    save_file(b, str(folder / "model-00002-of-00002.safetensors"))
    if with_index:
        wm = {k: "model-00001-of-00002.safetensors" for k in a}
        wm.update({k: "model-00002-of-00002.safetensors" for k in b})
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    return str(folder), sd


@pytest.mark.parametrize("with_index", [True, False])
def test_sharded_folder(tmp_path, with_index):
    folder, sd = _shard(tmp_path, with_index)
    d = detect(folder)
    assert (d.layout, d.format, d.quantized_layers) == ("lightx2v", "int8", 2)
    assert len(d.files) == 2
    got, _ = load_state_dict(folder)
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert _same_bytes(got[k], v), k


def test_sharded_folder_missing_shard(tmp_path):
    folder, _ = _shard(tmp_path)
    os.remove(os.path.join(folder, "model-00002-of-00002.safetensors"))
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        detect(folder)
    with pytest.raises(CheckpointError, match="missing"):
        load_state_dict(folder)


def test_sharded_folder_bad_index(tmp_path):
    folder, _ = _shard(tmp_path)
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(CheckpointError, match="index"):
        detect(folder)


def test_empty_folder_and_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="no .safetensors"):
        detect(str(tmp_path))
    with pytest.raises(CheckpointError, match="no such file"):
        detect(str(tmp_path / "nope.safetensors"))


def test_pth_dict_of_tensors_loads(tmp_path):
    sd = _lightx2v_sd("int8")
    p = str(tmp_path / "t5.pth")
    torch.save(sd, p)
    got, d = load_state_dict(p)
    assert d.layout == "lightx2v" and d.format == "int8"
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert _same_bytes(got[k], v), k


def test_pth_float_loads(tmp_path):
    sd = {"blocks.0.attn.q.weight": torch.randn(8, 16), "norm.weight": torch.ones(16)}
    p = str(tmp_path / "f.pth")
    torch.save(sd, p)
    got, d = load_state_dict(p)
    assert d.format is None
    assert torch.equal(got["blocks.0.attn.q.weight"], sd["blocks.0.attn.q.weight"])


class Payload:
    """A pickled object that is not a tensor: weights_only loading must refuse it."""

    def __reduce__(self):
        return (os.getcwd, ())


class Plain:
    def __init__(self):
        self.x = 1


@pytest.mark.parametrize("obj", [Payload(), Plain(), {"w": Plain()}])
def test_pth_with_a_non_tensor_object_is_refused(tmp_path, obj):
    p = str(tmp_path / "evil.pth")
    torch.save(obj, p)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_state_dict(p)


def test_pth_non_dict_is_refused(tmp_path):
    p = str(tmp_path / "list.pth")
    torch.save([torch.zeros(2)], p)
    with pytest.raises(CheckpointError, match="dict of tensors"):
        load_state_dict(p)


# ------------------------------------------------------------------ ComfyUI layout interop


@pytest.mark.parametrize("fmt", ["int8", "fp8", "nvfp4", "mxfp8"])
def test_comfyui_layout_loads_back_as_our_quantization(tmp_path, wan_dit_file, fmt):
    src, sd = wan_dit_file
    dst = str(tmp_path / "c.safetensors")
    convert(src, dst, fmt, layout="comfyui", progress=False)
    got, d = load_state_dict(dst)
    assert (d.layout, d.format) == ("comfyui", fmt)
    assert not any(k.endswith(".comfy_quant") for k in got)
    f = FORMATS[fmt]
    for base in ("blocks.0.self_attn.q.", "blocks.1.ffn.2."):
        w = sd[base + "weight"]
        n, k = w.shape
        q = QuantLinear(k, n, bias=True, fmt=f, kernel="torch")
        q.load_state_dict({kk[len(base):]: v for kk, v in got.items() if kk.startswith(base)})
        if fmt == "fp8":  # ComfyUI's float8_e4m3fn is per tensor: one scale, expanded to per row (lossless)
            assert q.weight_scale.unique().numel() == 1
            torch.testing.assert_close(q.weight_scale[0, 0], w.float().abs().max() / 448)
            err = ((q.dequantize_weight() - w.float()).norm() / w.float().norm()).item()
            assert err < 0.05
        else:  # same codes and scales as our own quantizer
            ref = f.dequantize_weight(f.quantize_weight(w), torch.float32)
            assert torch.equal(q.dequantize_weight(), ref)


@pytest.mark.parametrize("fmt", ["int8", "fp8", "nvfp4", "mxfp8"])
def test_comfyui_layout_matches_comfy_kitchen_dequantization(tmp_path, wan_dit_file, fmt):
    """Proves the comfyui layout we write is what ComfyUI core reads: dequantize our file's tensors
    with comfy_kitchen (ComfyUI's quantization library) and compare with our own dequantization."""
    ck = pytest.importorskip("comfy_kitchen")
    from safetensors.torch import load_file

    src, sd = wan_dit_file
    dst = str(tmp_path / "c.safetensors")
    convert(src, dst, fmt, layout="comfyui", progress=False)
    raw = load_file(dst)
    ours, _ = load_state_dict(dst)
    f = FORMATS[fmt]
    for base in ("blocks.0.self_attn.q.", "blocks.0.cross_attn.k_img.", "blocks.1.ffn.0.", "blocks.1.ffn.2."):
        marker = json.loads(bytes(raw[base + "comfy_quant"].tolist()).decode())
        w, s = raw[base + "weight"], raw[base + "weight_scale"]
        if fmt == "int8":
            assert marker["format"] == "int8_tensorwise"
            theirs = ck.dequantize_int8_simple(w, s).float()
        elif fmt == "fp8":
            assert marker["format"] == "float8_e4m3fn"
            assert s.shape == ()
            theirs = ck.dequantize_per_tensor_fp8(w, s, torch.float32)
        elif fmt == "nvfp4":
            assert marker["format"] == "nvfp4"
            theirs = ck.dequantize_nvfp4(w, raw[base + "weight_scale_2"], s, torch.float32)
        else:
            assert marker["format"] == "mxfp8" and s.dtype == torch.float8_e8m0fnu
            theirs = ck.dequantize_mxfp8(w, s, torch.float32)
        n, k = sd[base + "weight"].shape
        mine = f.dequantize_weight(checkpoint_qtensor(ours, base, f, n, k), torch.float32)
        assert theirs.shape == (n, k)
        torch.testing.assert_close(theirs, mine, rtol=1e-6, atol=0)
        # and it is close to the bf16 original
        orig = sd[base + "weight"].float()
        assert ((theirs - orig).norm() / orig.norm()).item() < 0.12


def checkpoint_qtensor(sd, base, fmt, n, k):
    q = QuantLinear(k, n, bias=True, fmt=fmt, kernel="torch")
    q.load_state_dict({kk[len(base):]: v for kk, v in sd.items() if kk.startswith(base)})
    return q.qweight()


def test_comfyui_layout_has_quantization_metadata(tmp_path, wan_dit_file):
    from quant.checkpoints.safetensors_file import read_header

    src, sd = wan_dit_file
    dst = str(tmp_path / "c.safetensors")
    convert(src, dst, "nvfp4", layout="comfyui", progress=False)
    _, meta = read_header(dst)
    qm = json.loads(meta["_quantization_metadata"])
    assert qm["layers"]["blocks.0.self_attn.q"] == {"format": "nvfp4"}
    assert len(qm["layers"]) == 24


def test_comfyui_missing_scale_is_an_error(tmp_path):
    sd = {"l.weight": torch.zeros(4, 8, dtype=torch.int8),
          "l.comfy_quant": torch.tensor(list(b'{"format": "int8_tensorwise"}'), dtype=torch.uint8)}
    p = str(tmp_path / "c.safetensors")
    save_file(sd, p)
    with pytest.raises(CheckpointError, match="weight_scale' is missing"):
        load_state_dict(p)


def test_checkpoint_module_reexports_error():
    assert issubclass(checkpoint.CheckpointError, ValueError)
