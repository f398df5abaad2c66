"""What the real server shows a user (issue 17.3, 17.7): display names, class names kept, dropdown order."""
from __future__ import annotations

LABELS = {"LoadQuantizedDiT": "Load Quantized DiT", "LoadQuantizedT5": "Load Quantized T5",
          "LoadQuantizedCLIP": "Load Quantized CLIP Vision", "QuantizedSample": "Sample (speed report)",
          "LoadLightX2VConfig": "Load LightX2V Config"}


def test_display_names_say_what_the_node_does(server):
    info = server.get("/object_info")
    assert {cls: info[cls]["display_name"] for cls in LABELS} == LABELS  # class names (saved workflows) unchanged


def test_dropdowns_list_own_kernels_before_libraries(server):
    info = server.get("/object_info")
    mm = info["LoadQuantizedDiT"]["input"]["required"]["mm_type"][0]
    assert mm[:4] == ["auto", "Default", "int8-triton", "fp8-triton"]
    assert mm.index("fp8-torch") < mm.index("int8-vllm") < mm.index("W-int8-channel-sym-A-int8-channel-sym-dynamic-Vllm")
    text = info["LoadQuantizedCLIP"]["input"]["required"]["quant_scheme"][0]
    assert text[:4] == ["auto", "Default", "int8", "fp8"] and text.index("fp8-torch") < text.index("int8-vllm")
