"""quant.linear.quantize_float_weight: a float weight quantized on another device (the GPU in ComfyUI; the CPU
stands in here) gives the same codes and scales as the CPU path, back on the weight's own device (issue 17.2)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from quant.formats import FORMATS
from quant.linear import normalize_state_dict, quantize_float_weight


def weight(n: int = 64, k: int = 128) -> torch.Tensor:
    return (torch.randn(n, k, generator=torch.Generator().manual_seed(0)) * 0.05).to(torch.bfloat16)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_device_path_gives_the_cpu_codes(fmt):
    fmt = FORMATS[fmt]
    ref = fmt.quantize_weight(weight())
    q = quantize_float_weight(weight(), fmt, "w", device="cpu")
    assert torch.equal(q.data.view(torch.uint8), ref.data.view(torch.uint8))
    assert q.scale.dtype == fmt.scale_dtype
    assert torch.equal(q.scale.view(torch.uint8), ref.scale.to(fmt.scale_dtype).view(torch.uint8))
    assert (q.global_scale is None) == (ref.global_scale is None)
    assert q.global_scale is None or torch.equal(q.global_scale, ref.global_scale)
    assert q.data.device == q.scale.device == torch.device("cpu")


def test_quantizer_runs_on_the_given_device():
    """The format's quantizer sees the weight on `device`, in its own dtype (one tensor, no float32 copy first)."""
    seen = []
    fmt = FORMATS["int8"]
    spy = dataclasses.replace(fmt, quantize_weight=lambda w: seen.append((w.device, w.dtype)) or fmt.quantize_weight(w))
    q = quantize_float_weight(weight().to(torch.float16), spy, "w", device="cpu")
    assert seen == [(torch.device("cpu"), torch.float16)] and q.data.device == torch.device("cpu")


def test_normalize_state_dict_on_a_device_matches_the_default():
    fmt = FORMATS["fp8"]
    a, b = {"l.weight": weight()}, {"l.weight": weight()}
    normalize_state_dict(a, "l.", fmt, 128, 64)
    normalize_state_dict(b, "l.", fmt, 128, 64, device="cpu")
    assert a.keys() == b.keys() and all(torch.equal(a[k].float(), b[k].float()) for k in a)


def test_non_finite_weight_refused_by_name():
    w = weight().float()
    w[3, 5] = float("nan")
    with pytest.raises(ValueError, match="blocks.0.q.weight"):
        quantize_float_weight(w, FORMATS["int8"], "blocks.0.q.weight", device="cpu")


def test_keep_leaves_codes_on_the_quantizing_device(monkeypatch):
    """keep=True: codes and scales stay where they were made (the GPU in ComfyUI; 'meta' stands in here)."""
    import quant.linear
    from quant.formats import QTensor
    monkeypatch.setattr(quant.linear, "check_finite", lambda t, name: None)  # meta tensors hold no values
    made = lambda t: QTensor(torch.empty(t.shape, dtype=torch.int8, device=t.device),
                             torch.empty(t.shape[0], 1, device=t.device), None)
    spy = dataclasses.replace(FORMATS["int8"], quantize_weight=made)
    kept = quantize_float_weight(weight(), spy, "w", device="meta", keep=True)
    assert kept.data.device.type == kept.scale.device.type == "meta"
    with pytest.raises(NotImplementedError):  # without keep they are copied back to the CPU (meta has no data)
        quantize_float_weight(weight(), spy, "w", device="meta")
