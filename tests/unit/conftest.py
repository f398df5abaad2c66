"""Shared fixtures of the CPU unit suite: seeded data, tiny Wan-DiT / T5 / CLIP checkpoints, helpers."""
from __future__ import annotations

import glob
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _skip_root_package_setup():
    """The repo root is a ComfyUI node pack, so it has an __init__.py that imports comfy.*; pytest
    (>= 8) treats the root as a test Package and imports that __init__.py before the first test,
    which fails without a ComfyUI checkout. The unit suite needs only quant/: skip that import
    for the repo root alone (it defines no setup_module). A root-level fix (conftest.py with a
    pytest_collect_directory hook, or guarded imports in __init__.py) makes this a no-op."""
    from pathlib import Path

    from _pytest import python as _py

    if getattr(_py.Package.setup, "_cq_patched", False):
        return
    orig = _py.Package.setup

    def setup(self):
        if Path(self.path).resolve() == Path(ROOT).resolve():
            return None
        return orig(self)

    setup._cq_patched = True
    _py.Package.setup = setup


_skip_root_package_setup()

# Formats and one mm_type name per format (any kernel suffix: files do not depend on it).
FORMAT_NAMES = ("int8", "fp8", "fp8_block128", "mxfp8", "nvfp4")
MM_TYPE_FOR = {"int8": "int8-vllm", "fp8": "fp8-triton", "fp8_block128": "fp8-b128-deepgemm",
               "mxfp8": "mxfp8", "nvfp4": "nvfp4"}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~30 s on a 2-core CPU")


@pytest.fixture
def gen():
    """A seeded CPU generator (each test gets the same numbers, whatever ran before it)."""
    return torch.Generator().manual_seed(1234)


def _randn(g, *shape, std=1.0, dtype=torch.float32):
    return (torch.randn(*shape, generator=g) * std).to(dtype)


def wan_dit_state_dict(g, dim=128, ffn=256, blocks=2, prefix="", dtype=torch.bfloat16, i2v=True):
    """A tiny Wan 2.1 DiT state dict with the real key names (and the shapes' roles, scaled down)."""
    sd = {}
    p = prefix
    sd[p + "patch_embedding.weight"] = _randn(g, dim, 16, 1, 2, 2, std=0.02, dtype=dtype)
    sd[p + "patch_embedding.bias"] = _randn(g, dim, std=0.02, dtype=dtype)
    sd[p + "text_embedding.0.weight"] = _randn(g, dim, 64, std=0.02, dtype=dtype)
    sd[p + "text_embedding.0.bias"] = _randn(g, dim, std=0.02, dtype=dtype)
    sd[p + "text_embedding.2.weight"] = _randn(g, dim, dim, std=0.02, dtype=dtype)
    sd[p + "time_embedding.0.weight"] = _randn(g, dim, 32, std=0.02, dtype=dtype)
    sd[p + "time_embedding.2.weight"] = _randn(g, dim, dim, std=0.02, dtype=dtype)
    sd[p + "time_projection.1.weight"] = _randn(g, 6 * dim, dim, std=0.02, dtype=dtype)
    for b in range(blocks):
        q = f"{p}blocks.{b}."
        sd[q + "modulation"] = _randn(g, 1, 6, dim, std=0.02, dtype=dtype)
        for attn in ("self_attn", "cross_attn"):
            for lin in ("q", "k", "v", "o"):
                sd[f"{q}{attn}.{lin}.weight"] = _randn(g, dim, dim, std=0.02, dtype=dtype)
                sd[f"{q}{attn}.{lin}.bias"] = _randn(g, dim, std=0.02, dtype=dtype)
            sd[f"{q}{attn}.norm_q.weight"] = torch.ones(dim, dtype=dtype)
            sd[f"{q}{attn}.norm_k.weight"] = torch.ones(dim, dtype=dtype)
        if i2v:
            for lin in ("k_img", "v_img"):
                sd[f"{q}cross_attn.{lin}.weight"] = _randn(g, dim, dim, std=0.02, dtype=dtype)
                sd[f"{q}cross_attn.{lin}.bias"] = _randn(g, dim, std=0.02, dtype=dtype)
            sd[f"{q}cross_attn.norm_k_img.weight"] = torch.ones(dim, dtype=dtype)
        sd[q + "norm3.weight"] = torch.ones(dim, dtype=dtype)
        sd[q + "norm3.bias"] = torch.zeros(dim, dtype=dtype)
        sd[q + "ffn.0.weight"] = _randn(g, ffn, dim, std=0.02, dtype=dtype)
        sd[q + "ffn.0.bias"] = _randn(g, ffn, std=0.02, dtype=dtype)
        sd[q + "ffn.2.weight"] = _randn(g, dim, ffn, std=0.02, dtype=dtype)
        sd[q + "ffn.2.bias"] = _randn(g, dim, std=0.02, dtype=dtype)
    if i2v:
        sd[p + "img_emb.proj.1.weight"] = _randn(g, dim, dim, std=0.02, dtype=dtype)
    sd[p + "head.head.weight"] = _randn(g, 64, dim, std=0.02, dtype=dtype)
    sd[p + "head.head.bias"] = _randn(g, 64, std=0.02, dtype=dtype)
    sd[p + "head.modulation"] = _randn(g, 1, 2, dim, std=0.02, dtype=dtype)
    return sd


def wan_dit_expected_quantized(sd):
    """Weight keys of a wan_dit_state_dict that LightX2V quantizes (attention + FFN linears of the blocks)."""
    import re
    rx = re.compile(r"blocks\.\d+\.(?:(?:self_attn|cross_attn)\.(?:q|k|v|o|k_img|v_img)|ffn\.[02])\.weight$")
    return {k for k in sd if rx.search(k)}


WAN_CONFIG = '{"_class_name": "WanModel", "dim": 128, "ffn_dim": 256, "num_layers": 2, "model_type": "i2v"}'


@pytest.fixture
def wan_dit_file(tmp_path, gen):
    """(path, state dict) of a tiny Wan DiT bf16 .safetensors with a `config` metadata entry."""
    from safetensors.torch import save_file

    sd = wan_dit_state_dict(gen)
    path = str(tmp_path / "wan_dit.safetensors")
    save_file(sd, path, metadata={"config": WAN_CONFIG, "format": "pt"})
    return path, sd


def tmp_leftovers(folder) -> list[str]:
    """Temporary files the converter / writer would leave behind."""
    return glob.glob(os.path.join(str(folder), "*.tmp-*"))


@pytest.fixture
def helpers():
    """Plain functions for test files (conftest is not importable as a module)."""
    class H:
        FORMAT_NAMES = FORMAT_NAMES
        MM_TYPE_FOR = MM_TYPE_FOR
        WAN_CONFIG = WAN_CONFIG
        wan_dit_state_dict = staticmethod(wan_dit_state_dict)
        wan_dit_expected_quantized = staticmethod(wan_dit_expected_quantized)
        tmp_leftovers = staticmethod(tmp_leftovers)
        randn = staticmethod(_randn)
    return H
