"""The keyword arguments newer ComfyUI (v0.40+) passes to a Linear: applied here, or refused by name.

Model code calls e.g. `self.ffn(h, input_act="swiglu")` or a pre-norm block's
`linear(x, input_act="rms_norm", act_weight=w, act_eps=eps, residual=r, residual_scale=s)`, meaning
`r + s * linear(act(x))`. Core folds these into its own kernels; the pack's layers apply them around
their own GEMM (activation before, residual after) so that no keyword is silently dropped.
"""
from __future__ import annotations

import comfy.ops
import torch
from torch import Tensor

# Keyword -> what it does; anything else reaching a quantized Linear is refused (see refuse_extra).
PROLOGUE = ("input_act", "act_weight", "act_eps")
EPILOGUE = ("residual", "residual_scale")


def _rms_norm(x: Tensor, weight: Tensor | None, eps: float | None) -> Tensor:
    import comfy.rmsnorm
    return comfy.rmsnorm.rms_norm(x, weight, 1e-6 if eps is None else eps)


def apply_input_act(x: Tensor, input_act: str | None, act_weight: Tensor | None, act_eps: float | None) -> Tensor:
    """act(x) for core's `input_act` names (comfy.ops.INPUT_ACT_EAGER, plus "rms_norm" with act_weight/act_eps)."""
    if input_act is None:
        if act_weight is not None or act_eps:
            raise ValueError("Linear got act_weight/act_eps without input_act='rms_norm'")
        return x
    if input_act == "rms_norm":
        return _rms_norm(x, act_weight, act_eps)
    if act_weight is not None or act_eps:
        raise ValueError(f"Linear got act_weight/act_eps with input_act={input_act!r}, which takes neither")
    table = getattr(comfy.ops, "INPUT_ACT_EAGER", {})
    if input_act not in table:
        raise ValueError(f"Linear got input_act={input_act!r}; this ComfyUI knows {sorted(table) + ['rms_norm']}")
    return table[input_act](x)


def add_residual(out: Tensor, residual: Tensor | None, residual_scale: Tensor | float | None) -> Tensor:
    """residual + residual_scale * out (the pre-norm block's addcmul); out unchanged without a residual."""
    if residual is None:
        if residual_scale is not None:
            raise ValueError("Linear got residual_scale without residual")
        return out
    if residual_scale is None:
        return residual + out
    return torch.addcmul(residual, out, torch.as_tensor(residual_scale, dtype=out.dtype, device=out.device))


def refuse_extra(args: tuple, kwargs: dict) -> None:
    """A quantized Linear takes the input alone (after the keywords above): anything else is an error naming it."""
    if args or kwargs:
        given = [f"{len(args)} positional"] * bool(args) + sorted(kwargs)
        raise TypeError(f"quantized Linear does not take {', '.join(given)} (only the input and "
                        f"{', '.join(PROLOGUE + EPILOGUE)})")
