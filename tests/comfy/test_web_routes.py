"""The capabilities route: safe without a running server, and its JSON when there is one."""
from __future__ import annotations

import asyncio
import json


def test_register_without_server(comfy_in_process):
    """No PromptServer instance (as in these in-process tests): nothing registered, no error."""
    from comfyui_quantized.nodes import routes
    assert routes.register_routes() is False


def test_handler_answers_without_gpu(comfy_in_process):
    from comfyui_quantized.nodes import routes
    report = json.loads(asyncio.run(routes.capabilities_handler(None)).body)
    assert report["device"] == "cpu" and report["mm_type"]["Default"]["status"] == "native"
    assert {"mm_type", "quant_scheme"} <= set(report)


def test_route_on_live_server(server):
    assert server.get("/quantized/capabilities")["quant_scheme"]["int8"]["status"] == "emulated"
