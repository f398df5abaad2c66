"""Checks of nodes/ops.py against whichever ComfyUI is importable (used in-process and for v0.3.64).

Each check takes the loaded pack module; `python ops_checks.py COMFY_ROOT` runs them all (CPU) and
prints "ok <name>" per check, so another ComfyUI version can be exercised in a subprocess.
"""
from __future__ import annotations

import os
import sys

import torch

FORMATS = {"int8-torch": 0.02, "fp8-torch": 0.06, "fp8-b128-torch": 0.06, "mxfp8-torch": 0.06, "nvfp4-torch": 0.2}


class Block(torch.nn.Module):
    """`blocks.0.self_attn.q` (quantized by the Wan family) and `time_embedding.0` (kept float)."""

    def __init__(self, ops):
        super().__init__()
        self.blocks = torch.nn.ModuleList([torch.nn.Module()])
        self.blocks[0].self_attn = torch.nn.Module()
        self.blocks[0].self_attn.q = ops.Linear(256, 128, dtype=torch.float32)
        self.time_embedding = torch.nn.ModuleList([ops.Linear(256, 128, dtype=torch.float32)])

    def forward(self, x):
        return self.blocks[0].self_attn.q(x) + self.time_embedding[0](x)


def _quant(pack, module: str):
    """The pack's own quant.<module> (the one its ops import), whatever name the pack was loaded under."""
    return sys.modules[f"{pack.__name__}.quant.{module}"]


def _setup(pack, name: str, seed: int = 0):
    resolve, families = _quant(pack, "schemes").resolve, _quant(pack, "families").FAMILIES
    g = torch.Generator().manual_seed(seed)
    sd = {"blocks.0.self_attn.q.weight": torch.randn(128, 256, generator=g) / 16,
          "blocks.0.self_attn.q.bias": torch.randn(128, generator=g) * 0.1,
          "time_embedding.0.weight": torch.randn(128, 256, generator=g) / 16,
          "time_embedding.0.bias": torch.zeros(128)}
    model = Block(pack.nodes.ops.make_ops(resolve(name, "mm_type", "cpu"), families["wan_dit"]))
    missing, unexpected = model.load_state_dict(dict(sd), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    x = torch.randn(4, 256, generator=g)
    ref = x @ (sd["blocks.0.self_attn.q.weight"] + sd["time_embedding.0.weight"]).t() + sd["blocks.0.self_attn.q.bias"]
    return model, sd, x, ref


def _rel(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


def check_load_and_forward(pack) -> None:
    """Quantizable key -> quantized storage, the other stays float; output within the format's bound."""
    for name, bound in FORMATS.items():
        model, _, x, ref = _setup(pack, name)
        q, f = model.blocks[0].self_attn.q, model.time_embedding[0]
        assert q.quantized and not f.quantized and f.weight.dtype == torch.float32
        assert q.weight.dtype != torch.float32 and q.weight_scale is not None
        err = _rel(model(x), ref)
        assert 0 < err < bound, (name, err)


def check_convert_set_roundtrip(pack) -> None:
    """ModelPatcher's force-cast path: set_weight(convert_weight(stored -> float)) gives back the same values."""
    for name in FORMATS:
        model, _, x, _ = _setup(pack, name)
        q = model.blocks[0].self_attn.q
        before = model(x)
        q.set_weight(q.convert_weight(q.weight.to(torch.float32)))
        assert torch.equal(model(x), before), name


def check_merged_lora(pack) -> None:
    """A LoRA patch merged by ModelPatcher changes the quantized layer as it changes the float one; unpatch restores."""
    import comfy.model_patcher
    for name, bound in FORMATS.items():
        model, _, x, ref = _setup(pack, name, seed=1)
        delta = torch.randn(128, 256, generator=torch.Generator().manual_seed(2)) / 64
        mp = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
        stored = model.blocks[0].self_attn.q.weight.clone()
        base = model(x)
        mp.add_patches({"blocks.0.self_attn.q.weight": (delta,)}, 1.0)
        mp.patch_model(device_to=torch.device("cpu"))
        err = _rel(model(x), ref + x @ delta.t())
        assert err < bound, (name, err)
        mp.unpatch_model(device_to=torch.device("cpu"))
        assert torch.equal(model.blocks[0].self_attn.q.weight.view(torch.uint8), stored.view(torch.uint8)), name
        assert torch.equal(model(x), base), name


def check_unmerged_lora(pack) -> None:
    """ComfyUI's LowVramPatch as weight_function (unmerged / low-VRAM LoRA) acts on the real float weight."""
    import comfy.model_patcher
    for name, bound in FORMATS.items():
        model, _, x, ref = _setup(pack, name, seed=3)
        q, key = model.blocks[0].self_attn.q, "blocks.0.self_attn.q.weight"
        delta = torch.randn(128, 256, generator=torch.Generator().manual_seed(4)) / 64
        mp = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
        mp.add_patches({key: (delta,)}, 1.0)
        stored = q.weight.clone()
        q.weight_function = [comfy.model_patcher.LowVramPatch(key, mp.patches, q.convert_weight, q.set_weight)]
        err = _rel(model(x), ref + x @ delta.t())
        assert err < bound, (name, err)
        assert torch.equal(q.weight.view(torch.uint8), stored.view(torch.uint8)), "storage must not change"


def check_kernel_unavailable(pack) -> None:
    """A scheme naming a kernel that cannot run on the CPU fails with the name of what to use instead."""
    try:
        _quant(pack, "schemes").resolve("int8-vllm", "mm_type", "cpu")
    except RuntimeError as e:
        assert "vllm" in str(e) and "int8-torch" in str(e), str(e)
    else:
        raise AssertionError("int8-vllm resolved on a CPU")


CHECKS = [check_load_and_forward, check_convert_set_roundtrip, check_merged_lora, check_unmerged_lora,
          check_kernel_unavailable]


if __name__ == "__main__":
    root = sys.argv[1]
    sys.path[:0] = [root, os.path.dirname(os.path.abspath(__file__))]
    from conftest import import_comfy, load_pack
    import_comfy(root)
    pack = load_pack()
    print("registered", sorted(pack.NODE_CLASS_MAPPINGS))
    for check in CHECKS:
        check(pack)
        print("ok", check.__name__)
