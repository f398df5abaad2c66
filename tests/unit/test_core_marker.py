"""What the converter tells ComfyUI core about each layer (`__metadata__["_quantization_metadata"]`), and that
the pack reads its files as the layout they are, marked or not (LightX2V's own files carry no marker)."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from quant.checkpoints.convert import convert
from quant.checkpoints.read import detect, load_state_dict
from quant.checkpoints.safetensors_file import read_header


def _core_formats(path) -> set:
    _, meta = read_header(path)
    return {v["format"] for v in json.loads(meta["_quantization_metadata"])["layers"].values()}


@pytest.mark.parametrize("fmt", ["int8", "fp8", "fp8_block128", "mxfp8", "nvfp4"])
def test_lightx2v_layout_names_core_format_or_a_refusal(tmp_path, wan_dit_file, helpers, fmt):
    src, sd = wan_dit_file
    dst = str(tmp_path / "q.safetensors")
    convert(src, dst, helpers.MM_TYPE_FOR[fmt], progress=False)
    (name,) = _core_formats(dst)
    if fmt == "int8":
        assert name == "int8_tensorwise"  # the same tensors as core's per-row int8
    else:
        assert name.startswith(f"{fmt} in the LightX2V layout") and "ComfyUI core cannot load it" in name
    assert len(json.loads(read_header(dst)[1]["_quantization_metadata"])["layers"]) == 24
    det = detect(dst)
    assert (det.layout, det.format) == ("lightx2v", fmt)
    marked, _ = load_state_dict(dst)
    # the same tensors without any header (as LightX2V publishes them) read the same
    bare = str(tmp_path / "bare.safetensors")
    save_file(load_file(dst), bare)
    assert (detect(bare).layout, detect(bare).format) == ("lightx2v", fmt)
    unmarked, _ = load_state_dict(bare)
    assert marked.keys() == unmarked.keys() and all(torch.equal(marked[k].view(torch.uint8), unmarked[k].view(torch.uint8))
                                                    for k in marked if marked[k].dtype.itemsize == 1)


@pytest.mark.parametrize("fmt", ["int8", "fp8", "mxfp8", "nvfp4"])
def test_comfyui_layout_names_cores_own_format(tmp_path, wan_dit_file, helpers, fmt):
    src, _ = wan_dit_file
    dst = str(tmp_path / "q.safetensors")
    convert(src, dst, helpers.MM_TYPE_FOR[fmt], layout="comfyui", progress=False)
    assert _core_formats(dst) == {{"int8": "int8_tensorwise", "fp8": "float8_e4m3fn"}.get(fmt, fmt)}
    assert (detect(dst).layout, detect(dst).format) == ("comfyui", fmt)
