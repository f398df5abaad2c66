"""ComfyUI inside a bench process: import it from a checkout, load this pack as ComfyUI does, build a
real-shaped Wan DiT file with ComfyUI's own model class and random weights.

The checkout comes from COMFYUI_PATH (or an argument). On a machine without PyAV (the GPU bench host),
ComfyUI's `nodes.py` still imports it for video files only: a placeholder module stands in, and any use
of it raises. Nothing here is imported by the node pack.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
import types
from dataclasses import dataclass

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
log = logging.getLogger(__name__)


class _Placeholder(types.ModuleType):
    """A module whose every attribute is a class that refuses to be used (see module docstring)."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def refuse(*_a, **_k):
            raise RuntimeError(f"{self.__name__}.{name}: PyAV is not installed on this bench machine")
        return type(name, (), {"__init__": refuse, "__init_subclass__": classmethod(lambda cls, **k: None)})


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `av` and `av.*` only when the real package is absent."""

    def find_spec(self, name, path=None, target=None):
        if name == "av" or name.startswith("av."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Placeholder(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        return None


def import_comfyui(root: str) -> None:
    """Put a ComfyUI checkout on sys.path and import comfy (CPU mode when no CUDA GPU is present)."""
    if not os.path.isfile(os.path.join(root, "comfy", "model_management.py")):
        raise SystemExit(f"{root} is not a ComfyUI checkout (set COMFYUI_PATH)")
    if root not in sys.path:
        sys.path.insert(0, root)
    if importlib.util.find_spec("av") is None:
        log.warning("PyAV is missing: a placeholder `av` module stands in (video file nodes unusable)")
        sys.meta_path.append(_PlaceholderFinder())
    import comfy.cli_args
    comfy.cli_args.args.cpu = not torch.cuda.is_available()
    import comfy.model_management  # noqa: F401  (reads args on import)


def load_pack(name: str = "comfyui_quantized") -> types.ModuleType:
    """Import this repository as ComfyUI imports a custom node pack: a package from its __init__.py."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "__init__.py"),
                                                  submodule_search_locations=[REPO])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class WanShape:
    """Wan 2.1 T2V block shapes: hidden dim, FFN dim, heads (head dim 128), text-embedding dim."""

    dim: int
    ffn: int
    heads: int
    text_dim: int = 4096


WAN = {
    "wan14b": WanShape(5120, 13824, 40),
    "wan1.3b": WanShape(1536, 8960, 12),
    "tiny": WanShape(256, 512, 2, 64),
}


def write_wan(path: str, shape: WanShape, blocks: int, device: torch.device, seed: int = 0) -> None:
    """A Wan T2V DiT of `blocks` blocks built by ComfyUI's WanModel on `device`, weights ~ N(0, 1/fan_in)
    (norm gains 1, modulation 0.3x), saved as bf16 safetensors with its text_dim in the metadata."""
    import comfy.ops
    from comfy.ldm.wan.model import WanModel
    from safetensors.torch import save_file

    g = torch.Generator(device=device).manual_seed(seed)
    with torch.device(device):
        m = WanModel(model_type="t2v", in_dim=16, dim=shape.dim, ffn_dim=shape.ffn, text_dim=shape.text_dim,
                     num_heads=shape.heads, num_layers=blocks, operations=comfy.ops.manual_cast,
                     device=device, dtype=torch.bfloat16)
    sd = {}
    for k, v in m.state_dict().items():
        if k.endswith("norm.weight") or k.endswith(("norm1.weight", "norm2.weight", "norm3.weight",
                                                    "norm_q.weight", "norm_k.weight")):
            t = torch.ones(v.shape, device=device)
        elif v.dim() <= 1:
            t = torch.randn(v.shape, device=device, generator=g) * 0.02
        else:
            t = torch.randn(v.shape, device=device, generator=g) / max(1, v[0].numel()) ** 0.5
        if "modulation" in k:
            t = t * 0.3
        sd[k] = t.to(torch.bfloat16).cpu()
    del m
    save_file(sd, path, metadata={"config": json.dumps({"transformer": {"text_dim": shape.text_dim}})})
