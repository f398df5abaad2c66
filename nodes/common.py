"""What every loader node shares: model file lists, checkpoint reading, scheme resolution, family checks."""
from __future__ import annotations

import glob
import os

import comfy.model_management
import folder_paths
import torch

from ..quant.checkpoints.read import Detected, load_state_dict
from ..quant.families import FAMILIES, ModelFamily, detect_family
from ..quant.schemes import Resolved, resolve

CATEGORY = "quantized"
DTYPES: dict[str, torch.dtype | None] = {"default": None, "bf16": torch.bfloat16, "fp16": torch.float16,
                                            "fp32": torch.float32}
DIT_FAMILIES = ("wan_dit", "flux_dit", "dit")  # "dit": any other DiT ComfyUI loads (quant.families' generic rule)
NODE_FOR = {"wan_dit": "Load Quantized DiT", "flux_dit": "Load Quantized DiT", "dit": "Load Quantized DiT",
            "wan_t5": "Load Quantized T5", "wan_clip": "Load Quantized CLIP Vision"}


def model_files(folder: str) -> list[str]:
    """Files of a ComfyUI model folder, plus sharded checkpoint folders (those with an index json) as 'name/'."""
    names = list(folder_paths.get_filename_list(folder))
    for root in folder_paths.get_folder_paths(folder):
        for index in glob.glob(os.path.join(root, "**", "*.safetensors.index.json"), recursive=True):
            names.append(os.path.relpath(os.path.dirname(index), root) + "/")
    return sorted(set(names))


def model_path(folder: str, name: str) -> str:
    """Full path of a dropdown entry (a file, or a sharded folder ending in '/')."""
    if name.endswith("/"):
        for root in folder_paths.get_folder_paths(folder):
            path = os.path.join(root, name.rstrip("/"))
            if os.path.isdir(path):
                return path
        raise FileNotFoundError(f"model folder {name!r} not found in {folder}")
    return folder_paths.get_full_path_or_raise(folder, name)


def read_checkpoint(path: str) -> tuple[dict, Detected, dict]:
    """(state dict in canonical layout, what the file holds, safetensors metadata minus quantization entries)."""
    sd, det = load_state_dict(path)
    meta = dict(det.metadata)
    meta.pop("_quantization_metadata", None)
    return sd, det, meta


def check_family(sd: dict, allowed: tuple[str, ...], node: str, name: str) -> ModelFamily:
    """The file's model family; an error naming the right node when it is not one this node loads."""
    try:
        fam = detect_family(sd.keys())
    except ValueError:
        raise ValueError(f"{node}: {name} is not a model this node loads (expected "
                         f"{' / '.join(allowed)}; no known layer names found)") from None
    if fam not in allowed:
        raise ValueError(f"{node}: {name} is a {fam} checkpoint, not a {' / '.join(allowed)} one; "
                         f"load it with the '{NODE_FOR[fam]}' node")
    return FAMILIES[fam]


def resolve_scheme(name: str, table: str, det: Detected) -> Resolved:
    """Bind the dropdown name to a scheme + kernel for ComfyUI's compute device (errors say what to pick)."""
    return resolve(name, table, comfy.model_management.get_torch_device(), det.format)
