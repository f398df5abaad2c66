"""Shared pieces of the whole-model benches (`python -m bench --block / --encoders`): random
linears, multi-head SDPA, and the loop that times a model in bf16, then with every nn.Linear swapped
for a QuantLinear of each native mm_type.
"""
from __future__ import annotations

import sys
from typing import Callable

import torch
from torch import nn

BASELINE = "bf16 F.linear"


def random_linear(i: int, o: int, bias: bool = True, device=None, dtype=torch.bfloat16) -> nn.Linear:
    """nn.Linear(i, o) with N(0, 1/i) weights and small random biases (unit-scale outputs)."""
    lin = nn.Linear(i, o, bias=bias, device=device, dtype=dtype)
    with torch.no_grad():
        lin.weight.normal_(0, i ** -0.5)
        if bias:
            lin.bias.normal_(0, 0.02)
    return lin


def mha(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, **sdpa) -> torch.Tensor:
    """SDPA over [B, L, heads * d] projections -> [B, L, heads * d] (sdpa: attn_mask, scale)."""
    split = [t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v)]
    return torch.nn.functional.scaled_dot_product_attention(*split, **sdpa).transpose(1, 2).flatten(2)


def linear_slots(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, layer) of every nn.Linear in the model, in module order."""
    return [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
            if type(child) is nn.Linear]


def per_method(model: nn.Module, mm_types: list[str], device: torch.device,
               measure: Callable[[], dict]) -> list[dict]:
    """[{method, **measure()}] for bf16 and each mm_type whose kernel runs natively here (on a CPU, where
    nothing does: the reference math, for tests); the model's float linears are put back after each. A
    method that fails is reported on stderr as not verified."""
    from quant.kernels import EMULATED, NATIVE, availability
    from quant.linear import QuantLinear
    from quant.schemes import resolve

    slots = linear_slots(model)
    out: list[dict] = []
    for name in [BASELINE, *mm_types]:
        try:
            if name != BASELINE:
                res = resolve(name, device=device)
                status = availability(res.kernel, res.scheme.format_name, device).status
                if status != NATIVE and not (device.type == "cpu" and status == EMULATED):
                    continue
                for parent, attr, lin in slots:
                    setattr(parent, attr, QuantLinear.from_float(lin, res.scheme.format, res.kernel))
            with torch.no_grad():
                out.append(dict(method=name, **measure()))
        except Exception as e:  # noqa: BLE001
            print(f"# {type(model).__name__} {name}: not verified: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            for parent, attr, lin in slots:
                setattr(parent, attr, lin)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out


def add_ratios(rows: list[dict], key: str) -> list[dict]:
    """rows[i]["ratio"] = bf16 time / rows[i][key] (None when the bf16 row is missing)."""
    base = rows[0][key] if rows and rows[0]["method"] == BASELINE else None
    for r in rows:
        r["ratio"] = None if base is None else base / r[key]
    return rows
