"""Key names of LightX2V / Wan-native T5 files mapped onto ComfyUI's (HF-style) T5 names."""
from __future__ import annotations

import re

_T5_RULES = (
    (r"^token_embedding\.", "shared."),
    (r"^norm\.", "encoder.final_layer_norm."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.block.\1.layer.0.layer_norm."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.block.\1.layer.1.layer_norm."),
    (r"^blocks\.(\d+)\.attn\.(q|k|v|o)\.", r"encoder.block.\1.layer.0.SelfAttention.\2."),
    (r"^blocks\.(\d+)\.pos_embedding\.embedding\.", r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias."),
    (r"^blocks\.(\d+)\.ffn\.gate\.0\.", r"encoder.block.\1.layer.1.DenseReluDense.wi_0."),
    (r"^blocks\.(\d+)\.ffn\.fc1\.", r"encoder.block.\1.layer.1.DenseReluDense.wi_1."),
    (r"^blocks\.(\d+)\.ffn\.fc2\.", r"encoder.block.\1.layer.1.DenseReluDense.wo."),
)
_T5_RX = [(re.compile(a), b) for a, b in _T5_RULES]


def t5_to_comfy(sd: dict) -> dict:
    """Rename Wan-native T5 keys (`blocks.N.attn.q.weight`, ...) to ComfyUI's; other keys pass unchanged."""
    if "token_embedding.weight" not in sd:
        return sd
    out = {}
    for k, v in sd.items():
        for rx, repl in _T5_RX:
            new, n = rx.subn(repl, k)
            if n:
                k = new
                break
        out[k] = v
    return out
