"""comfyui-quantized: ComfyUI entry point (node mappings, web extension folder, one log line of kernels).

Outside ComfyUI (no `comfy` to import, e.g. pytest collecting the repo root) it registers nothing.
"""
import importlib.util
import logging

WEB_DIRECTORY = "./web"
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

if importlib.util.find_spec("comfy") is not None:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from .nodes.routes import register_routes
    from .quant.capabilities import summary_line

    register_routes()
    logging.getLogger(__name__).info(summary_line())

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
