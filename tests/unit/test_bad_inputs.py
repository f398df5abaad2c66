"""Bad input (issue 2's list): each gives one clear error and nothing is written half-way."""
from __future__ import annotations

import glob
import os
import struct

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from quant import schemes
from quant.checkpoints.read import CheckpointError, detect, load_state_dict
from quant.checkpoints.convert import convert, main
from quant.formats import FORMATS
from quant.linear import QuantLinear
from quant.checkpoints.safetensors_file import read_header, read_tensor


def _nothing_written(folder, dst):
    assert not os.path.exists(dst), dst
    assert glob.glob(os.path.join(str(folder), "*.tmp-*")) == []


def _convert_fails(tmp_path, src, match, mm_type="int8", **kw):
    dst = str(tmp_path / "out" / "dst.safetensors")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with pytest.raises(ValueError, match=match) as e:
        convert(src, dst, mm_type, progress=False, **kw)
    _nothing_written(os.path.dirname(dst), dst)
    return e.value


# ------------------------------------------------------------------ broken files


def test_truncated_safetensors(tmp_path, wan_dit_file):
    src, _ = wan_dit_file
    data = open(src, "rb").read()
    bad = str(tmp_path / "truncated.safetensors")
    with open(bad, "wb") as f:
        f.write(data[: len(data) - 1000])
    for fn in (detect, load_state_dict, read_header):
        with pytest.raises(CheckpointError, match="truncated"):
            fn(bad)
    err = _convert_fails(tmp_path, bad, "truncated")
    assert isinstance(err, CheckpointError) and bad in str(err)


def test_truncated_inside_header(tmp_path, wan_dit_file):
    src, _ = wan_dit_file
    bad = str(tmp_path / "cut.safetensors")
    with open(bad, "wb") as f:
        f.write(open(src, "rb").read()[:200])
    with pytest.raises(CheckpointError, match="truncated"):
        detect(bad)
    small = str(tmp_path / "tiny.safetensors")
    with open(small, "wb") as f:
        f.write(b"\x01\x02")
    with pytest.raises(CheckpointError, match="too short"):
        detect(small)
    _convert_fails(tmp_path, bad, "truncated")


@pytest.mark.parametrize("payload", [
    os.urandom(4096),
    struct.pack("<Q", 20) + b"\xff\xfe garbage bytes!!" + b"\0" * 100,
    struct.pack("<Q", 16) + b'["not", "dict"]\n' + b"\0" * 100,
    struct.pack("<Q", 48) + b'{"w": {"dtype": "F32", "shape": [4, 4]}}        ' + b"\0" * 100,
    struct.pack("<Q", 64) + b'{"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 60]}}' + b"\0" * 100,
    struct.pack("<Q", 64) + b'{"w": {"dtype": "Q4", "shape": [4, 4], "data_offsets": [0, 64]}}  ' + b"\0" * 100,
], ids=["random", "not-utf8-json", "json-list", "no-offsets", "size-mismatch", "unknown-dtype"])
def test_corrupt_header(tmp_path, payload):
    bad = str(tmp_path / "corrupt.safetensors")
    with open(bad, "wb") as f:
        f.write(payload)
    with pytest.raises(CheckpointError) as e:
        load_state_dict(bad)
    assert bad in str(e.value)
    _convert_fails(tmp_path, bad, "corrupt|truncated|not a safetensors|unsupported dtype")


def test_read_tensor_on_file_truncated_after_header_check(tmp_path):
    p = str(tmp_path / "t.safetensors")
    save_file({"a": torch.randn(64, 64)}, p)
    tensors, _ = read_header(p)
    with open(p, "r+b") as f:
        f.truncate(os.path.getsize(p) - 100)
    with pytest.raises(CheckpointError, match="truncated"):
        read_tensor(p, "a", tensors["a"])


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("obj", [{"blocks.0.attn.q.weight": torch.zeros(2, 2), "evil": Evil()}, Evil()])
def test_pth_not_weights_only(tmp_path, obj):
    bad = str(tmp_path / "model.pth")
    torch.save(obj, bad)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_state_dict(bad)
    err = _convert_fails(tmp_path, bad, "weights-only", model_type="wan_t5")
    assert bad in str(err)


def test_pth_corrupt(tmp_path):
    bad = str(tmp_path / "broken.pth")
    with open(bad, "wb") as f:
        f.write(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError):
        load_state_dict(bad)


# ------------------------------------------------------------------ missing / misshapen scales


def _qsd(fmt, n=200, k=256):
    lin = nn.Linear(k, n)
    return {kk: v.clone() for kk, v in QuantLinear.from_float(lin, FORMATS[fmt], kernel="torch").state_dict().items()}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_missing_scale_tensor(fmt):
    sd = _qsd(fmt)
    del sd["weight_scale"]
    model = nn.Module()
    model.blk = QuantLinear(256, 200, fmt=FORMATS[fmt], kernel="torch")
    with pytest.raises(ValueError, match=r"'blk\.weight_scale' is missing"):
        model.load_state_dict({"blk." + k: v for k, v in sd.items()})


def test_missing_nvfp4_global_scale():
    sd = _qsd("nvfp4")
    del sd["weight_global_scale"]
    with pytest.raises(ValueError, match="weight_global_scale' is missing"):
        QuantLinear(256, 200, fmt=FORMATS["nvfp4"], kernel="torch").load_state_dict(sd)


@pytest.mark.parametrize("fmt,bad_shape", [("int8", (200, 2)), ("fp8", (100, 1)), ("fp8", (1, 1)),
                                           ("fp8_block128", (1, 2)), ("fp8_block128", (2, 3)),
                                           ("mxfp8", (200, 4)), ("nvfp4", (200, 8))])
def test_misshapen_scale_tensor(fmt, bad_shape):
    sd = _qsd(fmt)
    sd["weight_scale"] = torch.ones(bad_shape, dtype=sd["weight_scale"].dtype)
    with pytest.raises(ValueError, match=r"'weight_scale' has shape .*expected"):
        QuantLinear(256, 200, fmt=FORMATS[fmt], kernel="torch").load_state_dict(sd)


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_misshapen_weight_and_wrong_dtype(fmt):
    sd = _qsd(fmt)
    sd["weight"] = sd["weight"][:, :128].contiguous()
    with pytest.raises(ValueError, match=r"'weight' has shape"):
        QuantLinear(256, 200, fmt=FORMATS[fmt], kernel="torch").load_state_dict(sd)
    sd = _qsd(fmt)
    other = {"int8": "fp8", "fp8": "int8"}[fmt]
    sd["weight"] = _qsd(other)["weight"]
    with pytest.raises(ValueError, match=f"the {fmt} format stores"):
        QuantLinear(256, 200, fmt=FORMATS[fmt], kernel="torch").load_state_dict(sd)


def test_float_weight_with_a_scale_is_refused():
    sd = {"weight": torch.randn(200, 256), "weight_scale": torch.ones(200, 1)}
    with pytest.raises(ValueError, match="float weight takes no scale"):
        QuantLinear(256, 200, bias=False, fmt=FORMATS["int8"], kernel="torch").load_state_dict(sd)


def test_comfyui_misshapen_scale(tmp_path):
    sd = {"blocks.0.self_attn.q.weight": torch.zeros(8, 16, dtype=torch.int8),
          "blocks.0.self_attn.q.weight_scale": torch.ones(3),
          "blocks.0.self_attn.q.comfy_quant": torch.tensor(list(b'{"format": "int8_tensorwise"}'), dtype=torch.uint8)}
    p = str(tmp_path / "c.safetensors")
    save_file(sd, p)
    with pytest.raises(CheckpointError, match=r"weight_scale' has shape \(3,\)"):
        load_state_dict(p)


# ------------------------------------------------------------------ NaN / Inf


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_inf_in_weight_converter(tmp_path, gen, helpers, bad):
    sd = helpers.wan_dit_state_dict(gen)
    sd["blocks.0.cross_attn.v.weight"][5, 9] = bad
    src = str(tmp_path / "bad.safetensors")
    save_file(sd, src)
    err = _convert_fails(tmp_path, src, r"'blocks\.0\.cross_attn\.v\.weight'.*NaN/Inf")
    assert "1 NaN/Inf" in str(err)


def test_nan_in_a_copied_tensor_is_not_an_error(tmp_path, gen, helpers):
    """Only tensors being quantized are checked (absmax scales); copied tensors go through as they are."""
    sd = helpers.wan_dit_state_dict(gen)
    sd["blocks.0.norm3.weight"][0] = float("nan")
    src, dst = str(tmp_path / "n.safetensors"), str(tmp_path / "o.safetensors")
    save_file(sd, src)
    convert(src, dst, "int8", progress=False)
    assert os.path.exists(dst)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_inf_in_weight_quantlinear_loading(fmt, bad):
    w = torch.randn(200, 256)
    w[17, 3] = bad
    model = nn.Module()
    model.proj = QuantLinear(256, 200, fmt=FORMATS[fmt], kernel="torch")
    with pytest.raises(ValueError, match=r"'proj\.weight' holds 1 NaN/Inf"):
        model.load_state_dict({"proj.weight": w, "proj.bias": torch.zeros(200)})
    lin = nn.Linear(256, 200)
    lin.weight.data = w
    with pytest.raises(ValueError, match="NaN/Inf"):
        QuantLinear.from_float(lin, FORMATS[fmt], kernel="torch", name="blocks.3.ffn.0.weight")
    with pytest.raises(ValueError, match=r"'blocks\.3\.ffn\.0\.weight'"):
        QuantLinear.from_float(lin, FORMATS[fmt], kernel="torch", name="blocks.3.ffn.0.weight")


# ------------------------------------------------------------------ K vs block size


def test_k_not_divisible_by_block_converter(tmp_path):
    sd = {"blocks.0.self_attn.q.weight": torch.randn(64, 100).bfloat16(),
          "blocks.0.self_attn.k.weight": torch.randn(64, 128).bfloat16()}
    src = str(tmp_path / "k100.safetensors")
    save_file(sd, src)
    err = _convert_fails(tmp_path, src, "block size 128", mm_type="fp8-b128-triton")
    assert "blocks.0.self_attn.q.weight" in str(err) and "--keep" in str(err)
    # excluding that layer makes it work
    dst = str(tmp_path / "ok.safetensors")
    convert(src, dst, "fp8-b128-triton", keep=[r"self_attn\.q\."], progress=False)
    assert read_header(dst)[0]["blocks.0.self_attn.q.weight"].dtype == "BF16"


@pytest.mark.parametrize("fmt,k,block", [("fp8_block128", 100, 128), ("mxfp8", 100, 32), ("nvfp4", 100, 16)])
def test_k_not_divisible_by_block_linear(fmt, k, block):
    with pytest.raises(ValueError, match=f"in_features = {k} is not divisible by the block size {block}"):
        QuantLinear(k, 64, fmt=FORMATS[fmt], kernel="torch")
    with pytest.raises(ValueError, match=f"block size {block}"):
        FORMATS[fmt].quantize_weight(torch.randn(64, k))


def test_main_reports_bad_input_as_error(tmp_path, capsys):
    bad = str(tmp_path / "garbage.safetensors")
    with open(bad, "wb") as f:
        f.write(os.urandom(1000))
    dst = str(tmp_path / "o.safetensors")
    assert main([bad, dst, "--mm-type", "int8", "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    _nothing_written(tmp_path, dst)


# ------------------------------------------------------------------ mm_type vs what the file holds


@pytest.mark.parametrize("held,asked", [("int8", "fp8-vllm"), ("fp8", "int8-q8f"), ("fp8", "nvfp4"),
                                        ("nvfp4", "mxfp8"), ("fp8_block128", "fp8-torch"), ("int8", "Default")])
def test_mm_type_contradicts_file(tmp_path, held, asked):
    lin = nn.Linear(256, 200)
    q = QuantLinear.from_float(lin, FORMATS[held], kernel="torch")
    p = str(tmp_path / "held.safetensors")
    save_file({"blocks.0.ffn.0." + k: v.contiguous() for k, v in q.state_dict().items()}, p)
    fmt = detect(p).format
    assert fmt == held
    with pytest.raises(ValueError, match=f"holds {held} weights") as e:
        schemes.resolve(asked, device="cpu", file_format=fmt)
    assert asked in str(e.value) and "choose one of: auto" in str(e.value)
    # auto follows the file
    assert schemes.resolve("auto", device="cpu", file_format=fmt).scheme.format_name == held
