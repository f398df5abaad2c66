"""HTTP route `GET /quantized/capabilities`: what runs on this machine, for the web extension."""
from __future__ import annotations

from aiohttp import web

from ..quant.capabilities import capabilities

PATH = "/quantized/capabilities"
_report = None


async def capabilities_handler(request):
    """The capability report as JSON (computed once; the GPU and libraries do not change at run time)."""
    global _report
    if _report is None:
        _report = capabilities()
    return web.json_response(_report)


def register_routes() -> bool:
    """Adds the route to ComfyUI's server; False (and nothing done) when no server is running."""
    try:
        from server import PromptServer
    except ImportError:
        return False
    server = getattr(PromptServer, "instance", None)
    if server is None:
        return False
    if not any(getattr(route, "path", None) == PATH for route in server.routes):
        server.routes.get(PATH)(capabilities_handler)
    return True
