"""DiTs beyond Wan and Flux (issue 17.6): the generic rule in quant.families against ComfyUI's own model classes
(built on the meta device, real default widths), and tiny Qwen-Image / HunyuanVideo files through the real server."""
from __future__ import annotations

import re

import pytest
from conftest import make_tiny, ok
from graphs import latent, rel_err, t2v

# model -> (linears the rule quantizes, linears it keeps float), block indices written as N.
EXPECTED = {
    "qwen_image": ({"transformer_blocks.N.attn." + n for n in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj",
                                                               "add_k_proj", "add_v_proj", "to_add_out")}
                   | {f"transformer_blocks.N.{s}_mlp.net.{p}" for s in ("img", "txt") for p in ("0.proj", "2")},
                   {"transformer_blocks.N.img_mod.1", "transformer_blocks.N.txt_mod.1"}),
    "hunyuan_video": ({f"double_blocks.N.{s}_{p}" for s in ("img", "txt") for p in ("attn.qkv", "attn.proj", "mlp.0",
                                                                                      "mlp.2")}
                      | {"single_blocks.N.linear1", "single_blocks.N.linear2"},
                      {"double_blocks.N.img_mod.lin", "double_blocks.N.txt_mod.lin", "single_blocks.N.modulation.lin",
                       "txt_in.individual_token_refiner.blocks.N.self_attn.qkv",
                       "txt_in.individual_token_refiner.blocks.N.adaLN_modulation.1"}),
    "ltxv": ({f"transformer_blocks.N.attn{i}.{p}" for i in (1, 2) for p in ("to_q", "to_k", "to_v", "to_out.0")}
             | {"transformer_blocks.N.ff.net.0.proj", "transformer_blocks.N.ff.net.2"},
             {"adaln_single.linear", "caption_projection.linear_1", "patchify_proj", "proj_out"}),
    "sd3": ({f"joint_blocks.N.{b}.{p}" for b in ("x_block", "context_block")
             for p in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")},
            {"joint_blocks.N.x_block.adaLN_modulation.1", "joint_blocks.N.context_block.adaLN_modulation.1"}),
    "lumina": ({"layers.N.attention.qkv", "layers.N.attention.out"}
               | {f"layers.N.feed_forward.w{i}" for i in (1, 2, 3)},
               {"layers.N.adaLN_modulation.1", "final_layer.linear", "x_embedder"}),
}


def build(model: str):
    """A ComfyUI model class on the meta device (no memory), 1-2 blocks at its default widths."""
    import comfy.ops
    import torch
    ops = comfy.ops.manual_cast
    with torch.device("meta"):
        if model == "qwen_image":
            from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel
            return QwenImageTransformer2DModel(num_layers=2, operations=ops)
        if model == "hunyuan_video":
            from comfy.ldm.hunyuan_video.model import HunyuanVideo
            return HunyuanVideo(operations=ops, in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
                                hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=2, depth_single_blocks=2,
                                axes_dim=[16, 56, 56], theta=256, patch_size=[1, 2, 2], qkv_bias=True,
                                guidance_embed=True, byt5=False, meanflow=False, use_cond_type_embedding=False,
                                vision_in_dim=None, meanflow_sum=False)
        if model == "ltxv":
            from comfy.ldm.lightricks.model import LTXVModel
            return LTXVModel(num_layers=2, operations=ops)
        if model == "sd3":
            from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT
            return MMDiT(depth=2, adm_in_channels=2048, operations=ops, context_embedder_config={
                "target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}})
        if model == "lumina":
            from comfy.ldm.lumina.model import NextDiT
            return NextDiT(n_layers=2, operations=ops)
        if model == "wan22_5b":
            from comfy.ldm.wan.model import WanModel
            return WanModel(model_type="t2v", in_dim=48, out_dim=48, dim=3072, ffn_dim=14336, num_heads=24,
                            num_layers=2, operations=ops)
        if model == "flux":
            from comfy.ldm.flux.model import Flux
            return Flux(operations=ops, in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
                        hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=2, depth_single_blocks=2,
                        axes_dim=[16, 56, 56], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True,
                        txt_ids_dims=[])
    raise KeyError(model)


def split(model, family) -> tuple[set, set]:
    """(quantized, kept) Linear names of a model under a family's rule, block indices as N."""
    import torch
    from quant.families import should_quantize
    names = [k for k, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    q = {k for k in names if should_quantize(family, k + ".weight")}
    block = lambda ks: {re.sub(r"(blocks|layers)\.\d+\.", r"\1.N.", k) for k in ks}  # noqa: E731
    return block(q), block(set(names) - q)


@pytest.mark.parametrize("model", EXPECTED)
def test_generic_rule_on_comfyui_classes(comfy_in_process, model):
    from quant.families import FAMILIES
    quantized, kept = split(build(model), FAMILIES["dit"])
    want_q, want_kept = EXPECTED[model]
    assert quantized == want_q
    assert want_kept <= kept


@pytest.mark.parametrize("model, family", [("wan22_5b", "wan_dit"), ("flux", "flux_dit")])
def test_generic_rule_equals_the_named_families(comfy_in_process, model, family):
    """On Wan (2.2 5B shapes) and Flux the generic rule picks exactly the LightX2V sets."""
    from quant.families import FAMILIES
    m = build(model)
    assert split(m, FAMILIES["dit"]) == split(m, FAMILIES[family])
    assert split(m, FAMILIES["dit"])[0]


@pytest.fixture(scope="module")
def dits(comfy_root, workspace) -> dict:
    import os
    return make_tiny(comfy_root, "tiny_dits", os.path.join(workspace["base"], "models"))


def graph(names: dict, dits: dict, model: str, mm_type: str) -> dict:
    g = t2v(names, f"{model}_{mm_type}", dit=dits[model], mm_type=mm_type)
    if model == "qwen_image":  # an image model: its text width and an SD3-style latent
        g["t5"]["inputs"]["clip_name"] = dits["umt5_3584"]
        g["empty"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}}
    else:  # HunyuanVideo 1.5's 32-channel latent
        g["empty"]["class_type"] = "EmptyHunyuanVideo15Latent"
    return g


LAYERS = {"qwen_image": 12, "hunyuan_video": 10}  # linears the rule quantizes per model call (EXPECTED, 1 block each)
REFERENCE: dict = {}


@pytest.mark.parametrize("model, mm_type, bound", [("qwen_image", "int8-torch", 0.05),
                                                   ("hunyuan_video", "int8-torch", 0.05),
                                                   ("hunyuan_video", "fp8-torch", 0.08)])
def test_tiny_dit_through_the_server(server, workspace, dits, model, mm_type, bound):
    """Loads through Load Quantized DiT, samples, and stays close to the unquantized run; every block linear ran
    quantized (kernel calls = the rule's layer count x model calls)."""
    names = workspace["names"]
    if model not in REFERENCE:
        REFERENCE[model] = latent(workspace["output"], ok(server, graph(names, dits, model, "Default")))
    entry = ok(server, graph(names, dits, model, mm_type))
    err = rel_err(latent(workspace["output"], entry), REFERENCE[model])
    assert 0 < err < bound, err
    ui = entry["outputs"]["sample"]
    (kernel,) = ui["kernels"]
    assert kernel.startswith(mm_type.split("-")[0] + "/")
    calls = int(re.search(r" x(\d+)", ui["text"][0]).group(1))
    assert calls % LAYERS[model] == 0, (calls, LAYERS[model])
