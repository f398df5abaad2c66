"""Quantized Attention: MODEL in -> MODEL out whose attention runs a kernel of quant.attention, through
ComfyUI's `transformer_options["optimized_attention_override"]` (every `optimized_attention` call of a DiT:
Wan's self / cross / image attention, Flux's joint attention, ...).

Calls the kernel cannot take (a mask, head dim, dtype, too few keys, GQA, a model asking for full precision)
run ComfyUI's own function unchanged; every call is counted for the Sample report (quant.registry.RAN).
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import comfy.model_management
from torch import Tensor

from ..quant import attention as registry
from .common import CATEGORY

log = logging.getLogger(__name__)

NODE = "Quantized Attention"
RAN = registry.RAN  # label -> calls; cleared and read by the Sample node
TOOLTIP = ("auto: the fastest kernel measured on this GPU (ComfyUI's own attention where none is); a name runs "
           "that kernel (or fails saying what to install). Only Hopper (H200) was measured.")


def _comfy_label(func: Callable) -> str:
    """Report label of ComfyUI's own function, e.g. attention_pytorch -> "comfy-pytorch"."""
    return "comfy-" + getattr(func, "__name__", "attention").removeprefix("attention_")


class AttentionOverride:
    """The optimized_attention_override: kernel `kernel` of quant.attention where it takes the call, ComfyUI's
    own `func` elsewhere (kernel None: always `func`, counted). Holds only the name, so ModelPatcher clones
    (deepcopy) and pickles it; stateless, so two sampling threads may share it.

    ComfyUI passes q / k / v as [B, L, heads * D] ([B, heads, L, D] with skip_reshape) and wants [B, Lq, heads * D]
    back ([B, heads, Lq, D] with skip_output_reshape); the kernels see [B, H, L, D] views (no copies).
    """

    def __init__(self, kernel: Optional[str]) -> None:
        self.kernel = kernel

    def __repr__(self) -> str:
        return f"AttentionOverride({self.kernel!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AttentionOverride) and other.kernel == self.kernel

    def __hash__(self) -> int:
        return hash(self.kernel)

    def __call__(self, func: Callable, q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Optional[Tensor] = None,
                 attn_precision=None, skip_reshape: bool = False, skip_output_reshape: bool = False, **kwargs) -> Tensor:
        reason = None
        if self.kernel is not None:
            if not skip_reshape and k.shape[-1] != q.shape[-1]:
                reason = "k/v heads differ (GQA)"
            else:
                qh, kh, vh = (q, k, v) if skip_reshape else (_heads(t, heads) for t in (q, k, v))
                reason = registry.why_not(self.kernel, qh, kh, vh, mask,
                                           full_precision=kwargs.get("low_precision_attention", True) is False)
            if reason is None:
                out = registry.run(self.kernel, qh, kh, vh, kwargs.get("scale"))
                return out if skip_output_reshape else out.transpose(1, 2).flatten(2)
        label = _comfy_label(func)
        registry.count(label if reason is None else registry.fallback_label(label, reason))
        return func(q, k, v, heads, mask=mask, attn_precision=attn_precision, skip_reshape=skip_reshape,
                    skip_output_reshape=skip_output_reshape, **kwargs)


def _heads(t: Tensor, heads: int) -> Tensor:
    """[B, L, heads * D] -> the [B, heads, L, D] view."""
    return t.unflatten(-1, (heads, t.shape[-1] // heads)).transpose(1, 2)


def with_attention(model, name: str, node: str = NODE):
    """A clone of `model` (any ModelPatcher) whose attention runs `name` (a quant.attention name or auto).

    auto on a machine where plain SDPA is the fastest keeps ComfyUI's own attention (e.g. its
    --use-sage-attention choice) and only counts the calls. A named kernel that cannot run here raises.
    """
    try:
        kernel = registry.select(name, comfy.model_management.get_torch_device())
    except registry.AttentionUnavailable as e:
        raise registry.AttentionUnavailable(f"{node}: {e}") from None
    if name == registry.AUTO and kernel == registry.DEFAULT:
        kernel = None
    patched = model.clone()
    options = patched.model_options.setdefault("transformer_options", {})
    options["optimized_attention_override"] = AttentionOverride(kernel)
    log.info("[quantized] %s: attention %s -> %s", node, name, kernel or "ComfyUI's own")
    return patched


def report(counts: dict) -> str:
    """The Sample report's attention part: ", attention: qattn x800, comfy-pytorch (fallback: mask) x40" ("" when
    no call went through the override)."""
    if not counts:
        return ""
    return ", attention: " + ", ".join(f"{k} x{n}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class QuantizedAttention:
    """Patches any MODEL (the pack's loaders' or core's) so its attention runs the chosen kernel."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "model": ("MODEL",),
            "attention": (registry.names(), {"default": registry.AUTO, "tooltip": TOOLTIP}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Run the model's attention with a quantized or faster kernel (the pack's own, FlashAttention-3, "
                   "SageAttention, comfy-kitchen); masked or unsupported calls keep ComfyUI's attention.")

    def patch(self, model, attention: str) -> tuple:
        return (with_attention(model, attention),)
