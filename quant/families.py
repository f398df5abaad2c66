"""Which linear layers each model family quantizes (the same set LightX2V does); the rest stays float.

Keys may carry ComfyUI prefixes (`model.diffusion_model.`, `text_encoders.umt5xxl.transformer.`,
...); patterns match the key's tail. Norms, embeddings, modulation, time/text projections,
img_emb, patch embedding and output heads never match.

Any other DiT ComfyUI loads (Qwen-Image, HunyuanVideo, LTX-Video, Chroma, HiDream, Lumina, Cosmos, SD3, ...)
follows one generic rule, `dit`: the linears inside the model's repeated blocks (`<name>blocks.N.` or
`<name>layers.N.` at its root), except those under a modulation / adaLN, norm, embedding or head module
and MoE routers (`gate`). On Wan and Flux it picks exactly the wan_dit / flux_dit sets; the named
families stay for what names them (the converter's --model-type, LightX2V's key tables). A model where
the rule is wrong gets its own row above `dit`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class ModelFamily:
    """detect: a weight key only this family has; quantize: linear weights (without `.weight`) to quantize."""

    name: str
    detect: re.Pattern
    quantize: re.Pattern


def _rx(body: str) -> re.Pattern:
    return re.compile(r"(?:^|\.)" + body + r"$")


# The generic DiT rule: a root-level repeated block (after ComfyUI's prefixes), then a path none of whose
# segments names modulation / adaLN, a norm, an embedding or a head, nor is a MoE router.
_KEPT_SEGMENT = r"(?:[^.]*\.)*(?i:[^.]*(?:mod|adaln|norm|emb|head)[^.]*|gate)(?:\.|$)"
_GENERIC_DIT = r"^(?:model\.)?(?:diffusion_model\.)?[A-Za-z_]*(?:blocks|layers)\.\d+\.(?!" + _KEPT_SEGMENT + r")[\w.]+"


FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (
    ModelFamily("wan_dit", _rx(r"blocks\.\d+\.self_attn\.q\.weight"),
                _rx(r"blocks\.\d+\.(?:self_attn|cross_attn)\.(?:q|k|v|o|k_img|v_img)|blocks\.\d+\.ffn\.[02]")),
    ModelFamily("flux_dit", _rx(r"double_blocks\.\d+\.img_attn\.qkv\.weight"),
                _rx(r"double_blocks\.\d+\.(?:img|txt)_(?:attn\.qkv|attn\.proj|mlp\.0|mlp\.2)|single_blocks\.\d+\.linear[12]")),
    # umT5 / T5: Wan-native names (LightX2V .pth) and HF/ComfyUI names.
    ModelFamily("wan_t5", _rx(r"(?:blocks\.\d+\.attn\.q|block\.\d+\.layer\.0\.SelfAttention\.q)\.weight"),
                _rx(r"blocks\.\d+\.(?:attn\.(?:q|k|v|o)|ffn\.(?:gate\.0|fc1|fc2))"
                    r"|block\.\d+\.layer\.0\.SelfAttention\.(?:q|k|v|o)"
                    r"|block\.\d+\.layer\.1\.DenseReluDense\.(?:wi_0|wi_1|wi|wo)")),
    # CLIP vision tower: open-clip names (LightX2V .pth) and HF/ComfyUI clip_vision names.
    ModelFamily("wan_clip", _rx(r"(?:visual\.transformer\.\d+\.attn\.to_qkv|vision_model\.encoder\.layers\.\d+\.self_attn\.q_proj)\.weight"),
                _rx(r"visual\.transformer\.\d+\.(?:attn\.to_qkv|attn\.proj|mlp\.0|mlp\.2)"
                    r"|vision_model\.encoder\.layers\.\d+\.(?:self_attn\.(?:q_proj|k_proj|v_proj|out_proj)|mlp\.fc[12])")),
    # Last: detection tries the families in order, and this one matches any DiT's block linears.
    ModelFamily("dit", re.compile(_GENERIC_DIT + r"\.weight$"), re.compile(_GENERIC_DIT + "$")),
)}


def get_family(name: str) -> ModelFamily:
    """Family by name; unknown names list the valid ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model type {name!r}; valid: auto, {', '.join(FAMILIES)}") from None


def detect_family(keys: Iterable[str]) -> str:
    """Name of the family whose detection key appears among `keys`; error when none does."""
    keys = list(keys)
    for fam in FAMILIES.values():
        if any(fam.detect.search(k) for k in keys):
            return fam.name
    raise ValueError("cannot tell the model type from the tensor names (not a DiT, T5 or CLIP "
                     f"vision checkpoint?); first keys: {keys[:5]}; pass --model-type")


def should_quantize(family: ModelFamily, weight_key: str) -> bool:
    """True for `<layer>.weight` keys of linears the family quantizes."""
    return weight_key.endswith(".weight") and bool(family.quantize.search(weight_key[: -len(".weight")]))
