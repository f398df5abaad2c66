"""The web extension in a real browser: Debian's Chromium (headless) driven by Playwright, against the
live server with ComfyUI's real front end (conftest's `server` fixture runs without one, so this file
starts its own on the same tiny-model workspace)."""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import time

import pytest

from conftest import REPO, running_server
from test_workflows import FRONTEND_ONLY, WORKFLOWS, load, tiny, widget_inputs

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EXTENSION = "comfyui-quantized.capabilities"
T2V = next(p for p in WORKFLOWS if os.path.basename(p) == "wan2.1_t2v_1.3B_int8.json")

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} absent (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright absent (pip install playwright)")


@pytest.fixture(scope="module")
def web_server(comfy_root, workspace):
    """ComfyUI with its bundled front end (comfyui-frontend-package), the pack only, on a free port."""
    with running_server(comfy_root, workspace["base"], "web_server.log", []) as srv:
        yield srv


def open_page(browser, url: str, viewport: dict | None = None):
    """A ComfyUI page in a fresh context, loaded, with every console error, page error and failed request
    recorded in `page.problems`."""
    pg = browser.new_context(viewport=viewport or {"width": 1500, "height": 800}).new_page()
    pg.problems = []
    pg.on("console", lambda m: m.type == "error" and pg.problems.append(f"{m.text} @ {m.location.get('url')}"))
    pg.on("pageerror", lambda e: pg.problems.append(f"pageerror: {e} {e.stack}"))
    pg.on("requestfailed", lambda r: pg.problems.append(f"request failed: {r.url}"))
    pg.goto(url + "/")
    pg.wait_for_function("window.app?.graph && window.LiteGraph && window.app.extensions.length > 0",
                         timeout=60000)
    pg.wait_for_function(f"app.extensions.some(e => e.name === {EXTENSION!r})", timeout=30000)
    pg.wait_for_timeout(1000)
    pg.keyboard.press("Escape")  # the first-visit template browser
    return pg


def has_cjk_font() -> bool:
    """A font with Chinese glyphs is known to fontconfig (Chromium's fallback source on Linux)."""
    out = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=False)
    return out.returncode == 0 and bool(out.stdout.strip())


@pytest.fixture(scope="module")
def cjk_font() -> bool:
    """The templates' Chinese negative prompt needs a CJK font, else it shows as boxes: Debian's fonts-noto-cjk,
    installed here only as root with apt (never fatal); False when none is available."""
    if not has_cjk_font() and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "fonts-noto-cjk"], capture_output=True, check=False,
                       timeout=600)
    return has_cjk_font()


@pytest.fixture(scope="module")
def browser(cjk_font):
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(browser, web_server):
    """The ComfyUI page shared by the load/dropdown tests."""
    pg = open_page(browser, web_server.url)
    yield pg
    pg.context.close()


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
    assert "auto · unquantized" in entries  # what auto does with a float file on a CPU
    page.screenshot(path=str(tmp_path / "dropdown.png"))
    page.keyboard.press("Escape")
    assert page.evaluate("app.graph.nodes.find(n => n.type === 'LoadQuantizedDiT').widgets"
                         ".find(w => w.name === 'mm_type').value") == spot["value"] == "fp8-torch"
    saved = page.evaluate("app.graph.serialize()")
    dit = next(n for n in saved["nodes"] if n["type"] == "LoadQuantizedDiT")
    assert dit["widgets_values"][1] == "fp8-torch"
    assert ours(page.problems) == []


def test_chinese_text_renders_as_glyphs(page, cjk_font):
    """Two different Chinese characters draw differently (missing glyphs draw the same box)."""
    if not cjk_font:
        pytest.skip("no CJK font (apt-get install fonts-noto-cjk): the Chinese negative prompt shows as boxes")
    same = page.evaluate("""() => {
        const draw = (ch) => {
            const c = document.createElement('canvas');
            c.width = c.height = 40;
            const g = c.getContext('2d');
            g.font = '32px sans-serif';
            g.fillText(ch, 2, 34);
            return g.getImageData(0, 0, 40, 40).data.join(',');
        };
        return draw('色') === draw('调');
    }""")
    assert not same


def widget_positions(node: dict, info: dict) -> dict[str, int]:
    """Input name -> index in widgets_values (test_workflows.widget_values' walk, keeping the positions)."""
    count, at, out = len(node.get("widgets_values", [])), 0, {}
    optional = set(info.get("input_order", {}).get("optional", []))
    for name, spec in widget_inputs(info):
        if at >= count and name in optional:
            break
        out[name], at = at, at + 1
        opts = spec[1] if len(spec) > 1 else {}
        at += bool(opts.get("control_after_generate", name in ("seed", "noise_seed"))) + bool(opts.get("image_upload"))
    return out


def tiny_ui(wf: dict, object_info: dict, names: dict) -> dict:
    """The UI-format workflow with test_workflows.tiny's swaps applied to widgets_values in place: tiny model
    files (their `properties.models` entries renamed too, so no missing-model notice), CPU-sized sizes/steps."""
    wf = copy.deepcopy(wf)
    for node in wf["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        at = widget_positions(node, object_info[node["type"]])
        values = {name: node["widgets_values"][i] for name, i in at.items()}
        small = tiny({"0": {"class_type": node["type"], "inputs": dict(values)}}, names)["0"]["inputs"]
        renamed = {values[k]: v for k, v in small.items() if values[k] != v and isinstance(v, str)}
        for name, value in small.items():
            node["widgets_values"][at[name]] = value
        for model in node.get("properties", {}).get("models", []):
            model["name"] = renamed.get(model["name"], model["name"])
    return wf


def test_template_runs_from_the_ui(browser, web_server, workspace, tmp_path):
    """A new user's path: open the Wan 2.1 T2V template (tiny stand-in files), press Run, read the Sample
    node's real "last run" line (from its executed ui output), and see the dropdown marks.

    A page of its own (one workflow tab, a viewport that holds the whole graph) for the README screenshot."""
    wf = tiny_ui(load(T2V), web_server.get("/object_info"), workspace["names"])
    wf.setdefault("extra", {})["ds"] = {"scale": 0.72, "offset": [40, 100]}
    page = open_page(browser, web_server.url, {"width": 1600, "height": 900})
    page.evaluate("wf => app.loadGraphData(wf)", wf)
    page.wait_for_timeout(500)
    assert page.evaluate("app.graph.nodes.filter(n => !LiteGraph.registered_node_types[n.type]).length") == 0
    assert page.evaluate("app.graph.nodes.find(n => n.type === 'QuantizedSample').widgets"
                         ".find(w => w.name === 'last run')") is None
    assert "errors found" not in page.evaluate("document.body.innerText")  # the original names: "3 errors found"
    with page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as queued:
        page.locator('[data-testid="queue-button"]').click()
    assert queued.value.ok, queued.value.text()
    pid = queued.value.json()["prompt_id"]
    end = time.time() + 50
    while True:
        entry = web_server.get(f"/history/{pid}").get(pid)
        if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
            break
        assert time.time() < end, "the queued template did not finish in 50 s"
        time.sleep(0.2)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"]
    sample_id = str(next(n["id"] for n in wf["nodes"] if n["type"] == "QuantizedSample"))
    kernels = entry["outputs"][sample_id]["kernels"]
    assert kernels and all("int8" in k for k in kernels), kernels
    page.wait_for_function("""() => app.graph.nodes.find(n => n.type === 'QuantizedSample').widgets
        .find(w => w.name === 'last run')?.value""", timeout=10000)
    text, saved = page.evaluate("""() => {
        const n = app.graph.nodes.find(n => n.type === 'QuantizedSample');
        return [n.widgets.find(w => w.name === 'last run').value,
                app.graph.serialize().nodes.find(s => s.type === 'QuantizedSample').widgets_values.length];
    }""")
    per_step = entry["outputs"][sample_id]["seconds_per_step"][0]
    attention = entry["outputs"][sample_id].get("attention") or []
    assert attention, "the loader's attention input (auto) counts ComfyUI's own attention calls"
    assert text == (f"{per_step:.2f} s/step · CPU · kernels: {', '.join(kernels)} · "
                    f"attention: {', '.join(attention)}"), text
    assert saved == 7, "the stats widget must not be saved into the workflow"
    # The DiT's mm_type dropdown, marked; then the screenshot: the graph after the run, the marks on the
    # mm_type / quant_scheme widgets, the Sample node widened so its whole stats line shows.
    page.evaluate("""() => {
        document.querySelectorAll('.p-toast-close-button').forEach(b => b.click());
        const n = app.graph.nodes.find(n => n.type === 'QuantizedSample');
        n.setSize([560, n.size[1]]);
        app.graph.setDirtyCanvas(true, true);
    }""")
    page.wait_for_timeout(300)
    spot = page.evaluate("""() => {
        const n = app.graph.nodes.find(n => n.type === 'LoadQuantizedDiT');
        const w = n.widgets.find(w => w.name === 'mm_type');
        const rect = app.canvas.canvas.getBoundingClientRect();
        const [x, y] = app.canvas.ds.convertOffsetToCanvas([n.pos[0] + n.size[0] / 2, n.pos[1] + w.y + 10]);
        return {x: rect.left + x / devicePixelRatio, y: rect.top + y / devicePixelRatio};
    }""")
    page.mouse.click(spot["x"], spot["y"])
    page.wait_for_selector(".litecontextmenu .litemenu-entry")
    entries = page.evaluate("[...document.querySelectorAll('.litecontextmenu .litemenu-entry')].map(e => e.textContent)")
    assert "int8-torch · emulated on CPU" in entries, entries
    page.mouse.click(800, 780)  # an empty spot of the canvas closes the menu
    page.wait_for_selector(".litecontextmenu", state="detached", timeout=5000)
    assert "errors found" not in page.evaluate("document.body.innerText")
    shot = tmp_path / "template_run.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    if os.environ.get("UPDATE_SCREENSHOT"):
        shutil.copy(shot, os.path.join(REPO, "docs", "screenshot.png"))
    problems = ours(page.problems)
    page.context.close()  # (on a failure above, the browser fixture's close takes it)
    assert problems == []
