"""Peers timed beside our mm_types by `python -m bench`: torchao (compiled) and comfy-kitchen
(ComfyUI core's kernels), each only when importable; builders take a bf16 nn.Linear and return fn(x)."""
from __future__ import annotations

import copy
import sys
from typing import Callable

import torch
from torch import nn


def peer_methods(device: torch.device) -> list[tuple[str, str, Callable[[nn.Linear], Callable]]]:
    """(name, kernel label, build(linear) -> fn(x)) for the peers importable here (CUDA only)."""
    if device.type != "cuda":
        return []
    peers = []
    try:
        import torchao  # noqa: F401
        from torchao.quantization import (Float8DynamicActivationFloat8WeightConfig,
                                          Int8DynamicActivationInt8WeightConfig, PerRow, quantize_)

        def torchao_build(cfg_fn):
            def build(lin):
                mod = nn.Sequential(copy.deepcopy(lin))  # quantize_ replaces the weight in place
                quantize_(mod, cfg_fn())
                return torch.compile(mod)
            return build

        peers.append(("torchao int8 dyn (compiled)", f"torchao {torchao.__version__}",
                      torchao_build(Int8DynamicActivationInt8WeightConfig)))
        peers.append(("torchao fp8 rowwise (compiled)", f"torchao {torchao.__version__}",
                      torchao_build(lambda: Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))))
    except Exception as e:  # noqa: BLE001 - any import problem means "not importable here"
        print(f"# torchao not importable: {type(e).__name__}: {e}", file=sys.stderr)
    try:
        import importlib
        from importlib.metadata import version as _v

        ck = importlib.import_module("comfy_kitchen")  # a kernel library (ComfyUI core's), not ComfyUI itself

        label = f"comfy-kitchen {_v('comfy-kitchen')}"

        def ck_int8(lin):
            from quant.formats import get_format

            q = get_format("int8").quantize_weight(lin.weight.detach())
            w, s, b = q.data, q.scale, lin.bias.detach()
            return lambda x: ck.int8_linear(x, w, s, b, out_dtype=x.dtype)

        def ck_fp8(lin):  # ComfyUI core's fp8 recipe: per-tensor weight scale, input scale 1
            wf = lin.weight.detach().float()
            ws = (wf.abs().amax() / 448.0).reshape(())
            w8 = (wf / ws).clamp(-448, 448).to(torch.float8_e4m3fn)
            one = torch.ones((), device=wf.device)
            b = lin.bias.detach()

            def fn(x):
                x8 = ck.quantize_per_tensor_fp8(x, one)
                return torch._scaled_mm(x8, w8.t(), scale_a=one, scale_b=ws, bias=b, out_dtype=x.dtype)
            return fn

        peers.append(("comfy-kitchen int8 W8A8 (core)", label, ck_int8))
        peers.append(("comfy-kitchen fp8 per-tensor, input scale 1 (core)", label, ck_fp8))
    except Exception as e:  # noqa: BLE001
        print(f"# comfy-kitchen not importable: {type(e).__name__}: {e}", file=sys.stderr)
    return peers
