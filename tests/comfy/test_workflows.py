"""The example workflows against the live server: valid for /object_info, and runnable as API prompts."""
from __future__ import annotations

import glob
import json
import os

import pytest

from conftest import REPO, execution_error
from lightx2v_files import i2v_config

WORKFLOWS = sorted(glob.glob(os.path.join(REPO, "example_workflows", "*.json")))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
# Tiny stand-ins: file widgets -> tiny model keys (conftest's workspace names), sizes/steps -> CPU-sized.
FILES = {"unet_name": {"i2v": "dit_i2v", "": "dit_t2v"}, "clip_name": {"LoadQuantizedCLIP": "clip", "": "t5"},
         "vae_name": {"": "vae"}, "image": {"": "image"}, "config_name": {"": "lightx2v_i2v_config"}}
SMALL = {"width": 32, "height": 32, "length": 5, "steps": 2, "start_at_step": 1, "end_at_step": 1}
TO_THE_END = 10000  # KSamplerAdvanced end_at_step meaning "the last step"


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def widget_inputs(info: dict) -> list[tuple[str, list]]:
    """(name, spec) of a node type's widget inputs, in the order the front end lays out widgets_values."""
    order = info.get("input_order", {})
    inputs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    names = order.get("required", []) + order.get("optional", [])
    return [(n, inputs[n]) for n in names if isinstance(inputs[n][0], list) or inputs[n][0] in WIDGET_TYPES]


def combo_options(spec: list) -> list | None:
    """The allowed values of a combo input (old list form or V3 COMBO form), None for other widgets."""
    if isinstance(spec[0], list):
        return spec[0]
    return spec[1].get("options") if spec[0] == "COMBO" and len(spec) > 1 else None


def widget_values(node: dict, info: dict) -> dict:
    """widgets_values mapped onto input names (skipping control_after_generate and upload entries)."""
    values, out = list(node.get("widgets_values", [])), {}
    optional = set(info.get("input_order", {}).get("optional", []))
    for name, spec in widget_inputs(info):
        if not values and name in optional:
            break  # an optional widget newer than the workflow: the front end (and the server) use its default
        out[name] = values.pop(0)
        opts = spec[1] if len(spec) > 1 else {}
        if opts.get("control_after_generate", name in ("seed", "noise_seed")):
            values.pop(0)
        if opts.get("image_upload"):
            values.pop(0)
    return out


def to_api(wf: dict, object_info: dict) -> dict:
    """The UI workflow as an API prompt, like the front end's graphToPrompt (no groups/subgraphs used)."""
    links = {link[0]: link for link in wf["links"]}
    prompt = {}
    for node in wf["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) in (2, 4):
            continue
        inputs = widget_values(node, object_info[node["type"]])
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                _, src, src_slot, *_ = links[slot["link"]]
                inputs[slot["name"]] = [str(src), src_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def tiny(prompt: dict, names: dict) -> dict:
    """File names swapped for the tiny models, sizes and steps made CPU-sized, outputs renamed per test."""
    for node in prompt.values():
        for key, value in list(node["inputs"].items()):
            if isinstance(value, list):
                continue
            if key in FILES:
                table = FILES[key]
                pick = next((k for k in table if k and (k in value or k == node["class_type"])), "")
                node["inputs"][key] = names[table[pick]]
            elif key in SMALL and value < TO_THE_END:
                node["inputs"][key] = min(value, SMALL[key])
    return prompt


@pytest.fixture(scope="module")
def object_info(server) -> dict:
    return server.get("/object_info")


def test_workflows_present():
    """Five templates, each with its same-name .jpg thumbnail."""
    assert len(WORKFLOWS) == 5, WORKFLOWS
    for path in WORKFLOWS:
        assert os.path.isfile(path[:-5] + ".jpg"), f"no thumbnail for {path}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=os.path.basename)
def test_workflow_valid(path, object_info):
    """Every node type exists on the server, every non-file combo value is one the server offers."""
    wf = load(path)
    for node in wf["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        assert node["type"] in object_info, f"{os.path.basename(path)}: unknown node type {node['type']}"
        info = object_info[node["type"]]
        for name, value in widget_values(node, info).items():
            spec = dict(widget_inputs(info))[name]
            opts = combo_options(spec)
            if opts is not None and not name.endswith(("_name", "name1", "name2")) and name != "image":
                assert value in opts, f"{node['type']}.{name} = {value!r} not in {opts[:8]}..."
            if spec[0] in ("INT", "FLOAT") and len(spec) > 1:
                lo, hi = spec[1].get("min", float("-inf")), spec[1].get("max", float("inf"))
                assert lo <= value <= hi, f"{node['type']}.{name} = {value} outside [{lo}, {hi}]"


@pytest.mark.parametrize("path", [p for p in WORKFLOWS if "wan" in os.path.basename(p)], ids=os.path.basename)
def test_workflow_runs_on_tiny_models(path, server, object_info, workspace):
    """The template, converted to an API prompt with tiny stand-in files, runs to the end on the CPU.

    A Load LightX2V Config template gets a tiny Wan 2.1 I2V config written into models/lightx2v_configs/.
    """
    wf = load(path)
    names = dict(workspace["names"])
    if any(n["type"] == "LoadLightX2VConfig" for n in wf["nodes"]):
        names["lightx2v_i2v_config"] = i2v_config(workspace)
    prompt = tiny(to_api(wf, object_info), names)
    entry = server.run(prompt, timeout=240)
    err = execution_error(entry)
    assert err is None, f"{err['node_type']}: {err['exception_message']}"
    assert entry["outputs"], "no outputs"
