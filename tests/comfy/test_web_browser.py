"""The web extension in a real browser: Debian's Chromium (headless) driven by Playwright, against the
live server with ComfyUI's real front end (conftest's `server` fixture runs without one, so this file
starts its own on the same tiny-model workspace)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error

import pytest

from conftest import PACK, REPO, Server, _free_port
from test_workflows import WORKFLOWS, load

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EXTENSION = "comfyui-quantized.capabilities"

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} absent (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright absent (pip install playwright)")


@pytest.fixture(scope="module")
def web_server(comfy_root, workspace):
    """ComfyUI with its bundled front end (comfyui-frontend-package), the pack only, on a free port."""
    port, log_path = _free_port(), os.path.join(workspace["base"], "web_server.log")
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", workspace["base"], "--disable-auto-launch", "--disable-api-nodes",
           "--database-url", "sqlite:///:memory:", "--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=comfy_root, stdout=log, stderr=subprocess.STDOUT)
        srv, end = Server(f"http://127.0.0.1:{port}", log_path), time.time() + 180
        try:
            while True:
                try:
                    srv.get("/system_stats")
                    break
                except (urllib.error.URLError, ConnectionError, OSError):
                    if proc.poll() is not None or time.time() > end:
                        pytest.fail(f"ComfyUI did not start:\n{open(log_path).read()[-3000:]}")
                    time.sleep(0.5)
            yield srv
        finally:
            proc.terminate()
            proc.wait(timeout=20)


@pytest.fixture(scope="module")
def page(web_server):
    """The ComfyUI page, loaded, with every console error, page error and failed request recorded."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1500, "height": 800})
        pg.problems = []
        pg.on("console", lambda m: m.type == "error" and pg.problems.append(f"{m.text} @ {m.location.get('url')}"))
        pg.on("pageerror", lambda e: pg.problems.append(f"pageerror: {e} {e.stack}"))
        pg.on("requestfailed", lambda r: pg.problems.append(f"request failed: {r.url}"))
        pg.goto(web_server.url + "/")
        pg.wait_for_function("window.app?.graph && window.LiteGraph && window.app.extensions.length > 0",
                             timeout=60000)
        pg.wait_for_function(f"app.extensions.some(e => e.name === {EXTENSION!r})", timeout=30000)
        pg.wait_for_timeout(1000)
        pg.keyboard.press("Escape")  # the first-visit template browser
        yield pg
        browser.close()


def ours(problems: list[str]) -> list[str]:
    """Problems caused by this pack (ComfyUI's own offline 404s and blocked downloads are not ours)."""
    return [p for p in problems if "quantized" in p.lower() and "huggingface.co" not in p]


def open_workflow(page, path: str) -> dict:
    page.evaluate("wf => app.loadGraphData(wf)", load(path))
    page.wait_for_timeout(500)
    return page.evaluate("""() => ({
        missing: app.graph.nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type),
        count: app.graph.nodes.length})""")


def test_extension_loads_without_errors(page):
    assert page.evaluate("fetch('/quantized/capabilities').then(r => r.json()).then(j => j.device)") == "cpu"
    assert ours(page.problems) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_workflow_loads_without_missing_nodes(page, path):
    state = open_workflow(page, path)
    assert state["missing"] == [] and state["count"] == len(load(path)["nodes"])
    assert ours(page.problems) == []


def test_dropdown_marks_and_screenshot(page, tmp_path):
    """Entries read "name · status" in the open dropdown; the widget value stays the bare name."""
    open_workflow(page, next(p for p in WORKFLOWS if os.path.basename(p).startswith("wan2.1_i2v")))
    page.evaluate("document.querySelectorAll('.p-toast-close-button').forEach(b => b.click())")
    spot = page.evaluate("""() => {
        const n = app.graph.nodes.find(n => n.type === 'LoadQuantizedDiT');
        const w = n.widgets.find(w => w.name === 'mm_type');
        const rect = app.canvas.canvas.getBoundingClientRect();
        const [x, y] = app.canvas.ds.convertOffsetToCanvas([n.pos[0] + n.size[0] / 2, n.pos[1] + w.y + 10]);
        return {x: rect.left + x / devicePixelRatio, y: rect.top + y / devicePixelRatio, value: w.value};
    }""")
    page.mouse.click(spot["x"], spot["y"])
    page.wait_for_selector(".litecontextmenu .litemenu-entry")
    entries = page.evaluate("[...document.querySelectorAll('.litecontextmenu .litemenu-entry')].map(e => e.textContent)")
    assert "fp8-torch · emulated on CPU" in entries and "int8-vllm · needs vllm" in entries, entries
    assert "Default · unquantized" in entries
    page.screenshot(path=str(tmp_path / "dropdown.png"))
    if os.environ.get("UPDATE_SCREENSHOT"):
        shutil.copy(tmp_path / "dropdown.png", os.path.join(REPO, "docs", "screenshot.png"))
    page.keyboard.press("Escape")
    assert page.evaluate("app.graph.nodes.find(n => n.type === 'LoadQuantizedDiT').widgets"
                         ".find(w => w.name === 'mm_type').value") == spot["value"] == "fp8-torch"
    saved = page.evaluate("app.graph.serialize()")
    dit = next(n for n in saved["nodes"] if n["type"] == "LoadQuantizedDiT")
    assert dit["widgets_values"][1] == "fp8-torch"
    assert ours(page.problems) == []


def test_sample_shows_run_stats(page):
    """The Sample node's ui output (seconds per step, peak VRAM, kernels) appears on the node, unsaved."""
    open_workflow(page, next(p for p in WORKFLOWS if "t2v_1.3B" in p))
    text = page.evaluate("""() => {
        const n = app.graph.nodes.find(n => n.type === 'QuantizedSample');
        n.onExecuted({text: ['x'], seconds_per_step: [0.5], peak_vram_gb: [1.25], kernels: ['triton:int8']});
        return [n.widgets.find(w => w.name === 'last run')?.value, app.graph.serialize().nodes
            .find(s => s.type === 'QuantizedSample').widgets_values.length, n.widgets.length];
    }""")
    assert text[0] == "0.50 s/step · peak VRAM 1.25 GiB · kernels: triton:int8", text
    assert text[1] == 7, "the stats widget must not be saved into the workflow"
    assert ours(page.problems) == []
