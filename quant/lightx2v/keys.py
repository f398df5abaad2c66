"""Wan-native key names of LightX2V's T5 / CLIP `.pth` files -> ComfyUI's umT5 / clip_vision_h names.

T5 (`models_t5_umt5-xxl-enc-*.pth`, Wan's own umT5 encoder) maps onto ComfyUI's HF-style umT5
(`comfy/text_encoders/t5.py`): gate.0 is HF's wi_0, fc1 is wi_1, fc2 is wo; every block keeps its own
relative attention bias. CLIP (`models_clip_open-clip-xlm-roberta-large-vit-huge-14-*.pth`, Wan's
open-clip ViT-H/14) maps onto ComfyUI's `CLIPVisionModelProjection` (`clip_vision_config_h.json`):
the fused `to_qkv` linear is split into q/k/v (quantized rows and their scales split the same way),
embeddings are reshaped, `head` becomes `visual_projection.weight` (transposed); `textual.*` and
`log_scale` are dropped. A tensor suffix (`weight`, `bias`, `weight_scale`, `weight_global_scale`)
follows its layer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from torch import Tensor

from ..formats.base import ceil_div

# Tensors of one layer: the float/quantized weight, its bias, and LightX2V's scales.
_S = r"(weight|bias|weight_scale|weight_global_scale)"
BLOCK = 128


@dataclass(frozen=True)
class Rule:
    """One source-name pattern -> target template(s) (re.Match.expand syntax) and a value transform.

    value(t, rows) gets the tensor and the row count of its layer's weight (for splits) and returns
    one tensor per template.
    """

    pattern: re.Pattern
    templates: tuple[str, ...]
    value: Callable[[Tensor, int], tuple[Tensor, ...]]


def _same(t: Tensor, rows: int) -> tuple[Tensor, ...]:
    return (t,)


def _flat(t: Tensor, rows: int) -> tuple[Tensor, ...]:
    return (t.reshape(-1),)


def _drop_batch(t: Tensor, rows: int) -> tuple[Tensor, ...]:
    return (t.reshape(t.shape[-2], t.shape[-1]),)


def _transpose(t: Tensor, rows: int) -> tuple[Tensor, ...]:
    return (t.t().contiguous(),)


def _split_qkv(t: Tensor, rows: int) -> tuple[Tensor, ...]:
    """Split a fused [3N, ...] tensor of a [3N, K] linear into q, k, v along dim 0.

    Per-row tensors (weight, bias, per-channel or per-16/32 scales) split by rows; a scalar (nvfp4
    global scale) is shared; block-128 scales [3N/128, K/128] split only when N is a multiple of 128.
    """
    if t.dim() == 0 or t.numel() == 1:
        return (t, t, t)
    if rows % 3:
        raise ValueError(f"fused qkv has {rows} rows, not a multiple of 3")
    n = rows // 3
    if t.shape[0] == rows:
        return tuple(c.contiguous() for c in t.split(n, dim=0))
    if t.shape[0] == ceil_div(rows, BLOCK):
        if n % BLOCK:
            raise ValueError(f"fused qkv block-128 scales cannot be split: each of q/k/v has {n} rows, "
                             f"not a multiple of {BLOCK}")
        return tuple(c.contiguous() for c in t.split(n // BLOCK, dim=0))
    raise ValueError(f"fused qkv tensor has shape {tuple(t.shape)}: expected {rows} rows (or block-128 scales)")


def _rule(pattern: str, *templates: str, value=_same) -> Rule:
    return Rule(re.compile(pattern), templates, value)


_T5 = "encoder.block.\\1.layer"
T5_RULES: tuple[Rule, ...] = (
    _rule(r"token_embedding\.weight", "shared.weight"),
    _rule(r"norm\.weight", "encoder.final_layer_norm.weight"),
    _rule(r"blocks\.(\d+)\.norm1\.weight", _T5 + ".0.layer_norm.weight"),
    _rule(r"blocks\.(\d+)\.attn\.(q|k|v|o)\." + _S, _T5 + ".0.SelfAttention.\\2.\\3"),
    _rule(r"blocks\.(\d+)\.pos_embedding\.embedding\.weight", _T5 + ".0.SelfAttention.relative_attention_bias.weight"),
    _rule(r"blocks\.(\d+)\.norm2\.weight", _T5 + ".1.layer_norm.weight"),
    _rule(r"blocks\.(\d+)\.ffn\.gate\.0\." + _S, _T5 + ".1.DenseReluDense.wi_0.\\2"),
    _rule(r"blocks\.(\d+)\.ffn\.fc1\." + _S, _T5 + ".1.DenseReluDense.wi_1.\\2"),
    _rule(r"blocks\.(\d+)\.ffn\.fc2\." + _S, _T5 + ".1.DenseReluDense.wo.\\2"),
)

_L = "vision_model.encoder.layers.\\1."
CLIP_RULES: tuple[Rule, ...] = (
    _rule(r"visual\.patch_embedding\.weight", "vision_model.embeddings.patch_embedding.weight"),
    _rule(r"visual\.cls_embedding", "vision_model.embeddings.class_embedding", value=_flat),
    _rule(r"visual\.pos_embedding", "vision_model.embeddings.position_embedding.weight", value=_drop_batch),
    _rule(r"visual\.pre_norm\.(weight|bias)", "vision_model.pre_layrnorm.\\1"),
    _rule(r"visual\.transformer\.(\d+)\.norm1\.(weight|bias)", _L + "layer_norm1.\\2"),
    _rule(r"visual\.transformer\.(\d+)\.attn\.to_qkv\." + _S,
          _L + "self_attn.q_proj.\\2", _L + "self_attn.k_proj.\\2", _L + "self_attn.v_proj.\\2", value=_split_qkv),
    _rule(r"visual\.transformer\.(\d+)\.attn\.proj\." + _S, _L + "self_attn.out_proj.\\2"),
    _rule(r"visual\.transformer\.(\d+)\.norm2\.(weight|bias)", _L + "layer_norm2.\\2"),
    _rule(r"visual\.transformer\.(\d+)\.mlp\.0\." + _S, _L + "mlp.fc1.\\2"),
    _rule(r"visual\.transformer\.(\d+)\.mlp\.2\." + _S, _L + "mlp.fc2.\\2"),
    _rule(r"visual\.post_norm\.(weight|bias)", "vision_model.post_layernorm.\\1"),
    _rule(r"visual\.head", "visual_projection.weight", value=_transpose),
)


@dataclass(frozen=True)
class KeyMap:
    """A family's rules, the keys it drops, and a key that only its Wan-native files hold."""

    rules: tuple[Rule, ...]
    drop: re.Pattern
    native: re.Pattern


KEYMAPS: dict[str, KeyMap] = {
    "wan_t5": KeyMap(T5_RULES, re.compile(r"(?!)"), re.compile(r"blocks\.\d+\.attn\.q\.weight")),
    "wan_clip": KeyMap(CLIP_RULES, re.compile(r"textual\..*|log_scale"), re.compile(r"visual\.transformer\.\d+\.attn\.to_qkv\.weight")),
}


def is_native(keys: Iterable[str], family: str) -> bool:
    """True when the keys are LightX2V / Wan-native names of `family` (mapping needed)."""
    native = _keymap(family).native
    return any(native.fullmatch(k) for k in keys)


def _keymap(family: str) -> KeyMap:
    try:
        return KEYMAPS[family]
    except KeyError:
        raise ValueError(f"no LightX2V key mapping for model type {family!r}; valid: {', '.join(KEYMAPS)}") from None


def _weight_rows(sd: dict, key: str) -> int:
    """Row count of the weight of the layer `key` belongs to (0 when the key is not a layer tensor)."""
    base = re.sub(r"\." + _S + "$", "", key)
    w: Optional[Tensor] = sd.get(base + ".weight")
    return w.shape[0] if w is not None and w.dim() >= 1 else 0


def to_comfy(sd: dict, family: str) -> dict:
    """A state dict with ComfyUI names for `family` ("wan_t5" or "wan_clip").

    Keys already in ComfyUI's names pass through unchanged (the whole dict, when no Wan-native key
    is present); an unknown Wan-native key is an error naming it.
    """
    km = _keymap(family)
    if not is_native(sd, family):
        return sd
    out, unknown = {}, []
    for key, t in sd.items():
        if km.drop.fullmatch(key):
            continue
        for rule in km.rules:
            m = rule.pattern.fullmatch(key)
            if m:
                try:
                    values = rule.value(t, _weight_rows(sd, key))
                except ValueError as e:
                    raise ValueError(f"'{key}': {e}") from None
                out.update((m.expand(tpl), v) for tpl, v in zip(rule.templates, values))
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} tensor(s) of this {family} file have no ComfyUI name: "
                         f"{', '.join(unknown[:5])}")
    return out


__all__ = ["CLIP_RULES", "KEYMAPS", "T5_RULES", "Rule", "is_native", "to_comfy"]
