"""The pack's ComfyUI nodes: one class per file, registered here."""
from .attention import QuantizedAttention
from .load_clip_vision import LoadQuantizedCLIP
from .load_dit import LoadQuantizedDiT
from .load_lightx2v_config import LoadLightX2VConfig
from .load_t5 import LoadQuantizedT5
from .sample import QuantizedSample

NODE_CLASS_MAPPINGS = {
    "LoadQuantizedDiT": LoadQuantizedDiT,
    "LoadQuantizedT5": LoadQuantizedT5,
    "LoadQuantizedCLIP": LoadQuantizedCLIP,
    "QuantizedSample": QuantizedSample,
    "LoadLightX2VConfig": LoadLightX2VConfig,
    "QuantizedAttention": QuantizedAttention,
}
# What the UI shows. Saved workflows store the class names above, so those never change.
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadQuantizedDiT": "Load Quantized DiT",
    "LoadQuantizedT5": "Load Quantized T5",
    "LoadQuantizedCLIP": "Load Quantized CLIP Vision",
    "QuantizedSample": "Sample (speed report)",
    "LoadLightX2VConfig": "Load LightX2V Config",
    "QuantizedAttention": "Quantized Attention",
}
