"""The Triton kernel on a machine without a GPU: imports cleanly, launches nothing, says why it can't run."""
import torch

from quant.formats import get_format
from quant.kernels import KERNELS, act_quant, availability
from quant.kernels.triton import quant as triton_quant


def test_probe_says_needs_a_cuda_gpu_without_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for fmt in ("int8", "fp8", "fp8_block128"):
        a = availability("triton", fmt, torch.device("cpu"))
        assert a.status == "unavailable" and a.reason in ("needs a CUDA GPU", "triton is not installed")
    assert availability("triton", "nvfp4", torch.device("cpu")).status == "unavailable"


def test_registered_with_its_formats_and_custom_op():
    k = KERNELS["triton"]
    assert k.formats == {"int8", "fp8", "fp8_block128"}
    assert hasattr(torch.ops.comfyui_quantized, "triton_w8a8_linear")


def test_fake_kernel_gives_output_shape_without_launching():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(5, 256, dtype=torch.bfloat16)
        w = torch.empty(7, 256, dtype=torch.int8)
        out = torch.ops.comfyui_quantized.triton_w8a8_linear(x, w, torch.empty(7, 1), None, "int8")
    assert out.shape == (5, 7) and out.dtype == torch.bfloat16


def test_cpu_activation_quantization_falls_back_to_the_reference():
    x = torch.randn(6, 256)
    for fmt in ("int8", "fp8", "fp8_block128"):
        got, want = act_quant.quantize_activation(x, fmt), get_format(fmt).quantize_activation(x)
        assert torch.equal(got.data.view(torch.uint8), want.data.view(torch.uint8))
        assert torch.equal(got.scale, want.scale)
    assert triton_quant.FORMATS == ("int8", "fp8", "fp8_block128")
