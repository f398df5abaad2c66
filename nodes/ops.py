"""The bridge: a comfy.ops operations class whose Linear holds quant/ storage and runs quant.linear.

Which Linear is quantized is decided while loading, from its state-dict key and the model family
(quant.families.should_quantize); the others stay float and behave exactly like comfy's manual_cast.
Weights and scales travel together: the weight through comfy's cast_bias_weight (kept in its own
dtype, so offload/low-VRAM streaming works), the scales moved to the input's device in forward.
LoRA: convert_weight/set_weight (merged: dequantize -> patch -> quantize with fresh scales; ComfyUI backs up
only `weight`, so the layer keeps the old scales itself and puts them back when ModelPatcher restores the
weight) and weight_function patches applied to the dequantized weight (fresh scales too: both paths agree).
Newer ComfyUI: quantized layers are marked `_full_precision_mm` (core's fast paths leave them alone) and the
Linear keywords of v0.40 (input_act, residual, ...) are applied around the GEMM (nodes/linear_kwargs.py).
"""
from __future__ import annotations

import inspect
import logging
import weakref

import comfy.float
import comfy.model_patcher
import comfy.ops
import torch
from torch import Tensor

from ..quant.calls import CallCounter
from ..quant.families import ModelFamily, should_quantize
from ..quant.formats import QTensor, QuantFormat
from ..quant.linear import normalize_state_dict, quantize_float_weight, quantized_linear
from ..quant.requant import requantize_like
from ..quant.schemes import Resolved
from .linear_kwargs import add_residual, apply_input_act, refuse_extra
from .quantizing import current as current_loading

log = logging.getLogger(__name__)


# Kernel label -> forward calls since the last reset (read and reset by the Sample node).
RAN = CallCounter()


def _patch_sees_storage() -> bool:
    """ComfyUI <= 0.3.x: LowVramPatch itself calls convert_weight/set_weight on the raw stored tensor.
    Read from its source; where the source cannot be read (frozen install, no .py files) the newer behaviour."""
    try:
        return "convert_func(" in inspect.getsource(comfy.model_patcher.LowVramPatch.__call__)
    except (OSError, TypeError):
        return False


_NEW_CAST = "offloadable" in inspect.signature(comfy.ops.cast_bias_weight).parameters
_PATCH_SEES_STORAGE = _patch_sees_storage()
_QUANT_KEYS = ("weight", "weight_scale", "weight_global_scale")


def _cast(s: torch.nn.Module, x: Tensor, dtype: torch.dtype):
    """comfy's cast_bias_weight with the weight kept in `dtype`; returns (weight, bias, offload_stream)."""
    if _NEW_CAST:
        return comfy.ops.cast_bias_weight(s, x, dtype=dtype, bias_dtype=x.dtype, offloadable=True)
    w, b = comfy.ops.cast_bias_weight(s, x, dtype=dtype, bias_dtype=x.dtype)
    return w, b, None


def _on(t: Tensor | None, device: torch.device) -> Tensor | None:
    """t on device (non-blocking copy only when it lies elsewhere); None stays None."""
    return t if t is None or t.device == device else t.to(device, non_blocking=True)


def _uncast(s: torch.nn.Module, w: Tensor, b: Tensor | None, stream) -> None:
    if stream is not None and hasattr(comfy.ops, "uncast_bias_weight"):
        comfy.ops.uncast_bias_weight(s, w, b, stream)


class BridgeLinear(comfy.ops.manual_cast.Linear):
    """Linear that becomes quantized on load when its key is one the family quantizes."""

    fmt: QuantFormat = None
    kernel: str = None
    family: ModelFamily = None
    # Core's mark for layers its fast paths must leave alone (comfy.ops.linear_input_act's fp16 branch):
    # set on quantized layers, whose stored weight is codes that mean nothing without their scales.
    _full_precision_mm: bool = False
    # Set by a merged set_weight: the scales of the weight it replaced, and id() of the weight it installed.
    _unpatched_scales: tuple | None = None
    _merged_weight_id: int | None = None
    # Weak references to the scale tensors a merge made: once the merge is undone they may not come back.
    _merged_scale_refs: tuple = ()

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None) -> None:
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features, self.compute_dtype = in_features, out_features, dtype
        # No float allocation: the real weight (float or quantized) arrives in _load_from_state_dict.
        self.weight = torch.nn.Parameter(torch.empty((out_features, in_features), device="meta", dtype=dtype),
                                         requires_grad=False)
        self.bias = torch.nn.Parameter(torch.empty(out_features, device=device, dtype=dtype),
                                       requires_grad=False) if bias else None
        self.register_buffer("weight_scale", None)
        self.register_buffer("weight_global_scale", None)
        # Instance attributes from the start: forward assigns them, and torch.compile guards on what a layer's
        # __dict__ holds, so one that appeared after the first compiled call would recompile the whole model.
        self.weight_function, self.bias_function, self.weight_lowvram_function = [], [], None

    @property
    def quantized(self) -> bool:
        """True once a quantized weight (with its scales) has been loaded."""
        return self.weight_scale is not None

    def _load_from_state_dict(self, sd, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        wkey = prefix + "weight"
        if wkey in sd:
            if self.fmt is not None and self.family is not None and should_quantize(self.family, wkey):
                self._take_quantized(sd, prefix)
            else:
                self._take_float(sd, prefix)
        super()._load_from_state_dict(sd, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        for k in _QUANT_KEYS:
            if prefix + k in missing_keys and (k == "weight" or self.quantized):
                missing_keys.remove(prefix + k)
        for name, t in (("weight", self.weight), ("weight_scale", self.weight_scale),
                        ("weight_global_scale", self.weight_global_scale)):
            if t is not None:
                setattr(self, name + "_comfy_model_dtype", t.dtype)

    def _take_quantized(self, sd: dict, prefix: str) -> None:
        """Quantize a float weight (on the loader's GPU if any) or check a stored one; keep it with its scales."""
        loading = current_loading()
        normalize_state_dict(sd, prefix, self.fmt, self.in_features, self.out_features,
                             device=loading.device if loading else None, keep=bool(loading and loading.keep))
        self.weight = torch.nn.Parameter(sd.pop(prefix + "weight"), requires_grad=False)
        self.weight_scale = sd.pop(prefix + "weight_scale")
        self.weight_global_scale = sd.pop(prefix + "weight_global_scale", None)
        self._full_precision_mm = True
        if loading is not None:
            loading.bar.update(1)

    def _take_float(self, sd: dict, prefix: str) -> None:
        """A layer the family keeps float; a stored quantized one is dequantized (needs the format)."""
        w = sd.pop(prefix + "weight")
        scale = sd.pop(prefix + "weight_scale", None)
        if scale is not None:
            if self.fmt is None:
                raise ValueError(f"'{prefix}weight' is quantized but no quantized format was chosen")
            q = QTensor(w, scale, sd.pop(prefix + "weight_global_scale", None))
            w = self.fmt.dequantize_weight(q, self.compute_dtype or torch.float32)
        elif self.compute_dtype is not None:
            w = w.to(self.compute_dtype)
        self.weight = torch.nn.Parameter(w, requires_grad=False)

    def _scales(self, device: torch.device) -> QTensor:
        """The scales on `device` (moved only when elsewhere: this runs on every forward), data left None."""
        return QTensor(None, _on(self.weight_scale, device), _on(self.weight_global_scale, device))

    def register_parameter(self, name: str, param: torch.nn.Parameter | None) -> None:
        """A `weight` written from outside after a merge is ModelPatcher putting its backup back (unpatch,
        partial unload): the scales saved by set_weight come back with it."""
        saved = self._unpatched_scales
        if name == "weight" and saved is not None and id(param) != self._merged_weight_id:
            self._unpatched_scales = self._merged_weight_id = None
            self.weight_scale, self.weight_global_scale = saved
        super().register_parameter(name, param)

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """ModelPatcherDynamic backs up buffers after merging and puts them back after the weight: a scale made by
        a merge that has since been undone is stale, and the current (restored) one stays."""
        if self._unpatched_scales is None and tensor is not None and any(r() is tensor for r in self._merged_scale_refs):
            tensor = getattr(self, name)
        super().register_buffer(name, tensor, persistent)

    def forward(self, input: Tensor, *args, input_act: str | None = None, act_weight: Tensor | None = None,
                act_eps: float | None = None, residual: Tensor | None = None, residual_scale=None, **kwargs) -> Tensor:
        """residual + residual_scale * linear(input_act(input)), the keywords of ComfyUI v0.40 applied here."""
        out = super().forward(apply_input_act(input, input_act, act_weight, act_eps), *args, **kwargs)
        return add_residual(out, residual, residual_scale)

    def forward_comfy_cast_weights(self, input: Tensor, *args, **kwargs) -> Tensor:
        """Float layers: comfy's manual_cast path. Quantized: cast the stored weight, apply LoRA patches, GEMM."""
        if not self.quantized:
            return super().forward_comfy_cast_weights(input, *args, **kwargs)
        refuse_extra(args, kwargs)
        fns, lowvram = self.weight_function, self.weight_lowvram_function
        self.weight_function, self.weight_lowvram_function = [], None  # keep patches off the raw storage
        try:
            w, b, stream = _cast(self, input, self.weight.dtype)
        finally:
            self.weight_function, self.weight_lowvram_function = fns, lowvram
        q = self._scales(input.device)
        q.data = w
        if fns or lowvram is not None:
            q = self._patched(q, [f for f in (lowvram, *fns) if f is not None])
        out = quantized_linear(input, q, b, self.fmt, self.kernel)
        _uncast(self, w, b, stream)
        if not torch.compiler.is_compiling():  # see quant.calls
            RAN.add(_label(self.fmt, self.kernel, input.device))
        return out

    def _patched(self, q: QTensor, fns: list) -> QTensor:
        """Apply unmerged (low-VRAM) LoRA patches on the dequantized weight, then quantize afresh (as a merge does)."""
        wf = self.fmt.dequantize_weight(q, torch.float32)
        for f in fns:
            wf = _on_float_weight(f)(wf)
        return self.fmt.quantize_weight(wf)

    def convert_weight(self, weight: Tensor, inplace: bool = False, **kwargs) -> Tensor:
        """ModelPatcher hook: a copy of the stored weight (cast to float) -> the real float weight."""
        if not self.quantized:
            return weight
        q = self._scales(weight.device)
        q.data = weight.to(self.weight.dtype)
        dtype = weight.dtype if weight.dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.float32
        return self.fmt.dequantize_weight(q, dtype)

    def set_weight(self, weight: Tensor, inplace_update: bool = False, seed: int | None = None,
                   return_weight: bool = False, **kwargs) -> Tensor | None:
        """ModelPatcher hook: store a patched float weight.

        Quantized, merged (the usual LoRA path): quantized with fresh scales; the old scales are kept and put
        back when ModelPatcher restores its backup of `weight` (register_parameter). Returned or updated in
        place (ComfyUI then copies or caches the codes alone): requantized against the current scales.
        """
        if self.quantized and not (return_weight or inplace_update):
            self._merge(weight)
            return None
        if self.quantized:
            q = self._scales(weight.device)
            q.data = self.weight
            requantized, clipped = requantize_like(self.fmt, weight, q)
            if clipped:
                log.warning("[quantized] a patch stored in place (hooks / inplace update) clips %d values of a %s "
                            "layer to its old range", clipped, self.fmt.name)
            new = requantized.data.to(self.weight.device)
        else:
            new = comfy.float.stochastic_rounding(weight, self.weight.dtype, seed=seed).to(self.weight.device)
        if return_weight:
            return new
        if inplace_update:
            self.weight.data.copy_(new)
        else:
            self.weight = torch.nn.Parameter(new, requires_grad=False)
        return None

    def _merge(self, weight: Tensor) -> None:
        """Quantize the patched float weight afresh; the scales it replaces are kept for the restore."""
        q = quantize_float_weight(weight.float(), self.fmt, "patched weight")
        if self._unpatched_scales is None:
            self._unpatched_scales = (self.weight_scale, self.weight_global_scale)
        param = torch.nn.Parameter(q.data.to(self.weight.device), requires_grad=False)
        self._merged_weight_id = id(param)
        self.weight = param
        self.weight_scale = q.scale.to(self.weight_scale.device)
        if q.global_scale is not None:
            self.weight_global_scale = q.global_scale.to(self.weight_scale.device)
        self._merged_scale_refs = tuple(weakref.ref(t) for t in (self.weight_scale, self.weight_global_scale)
                                        if t is not None)

    def extra_repr(self) -> str:
        kind = f"{self.fmt.name}/{self.kernel}" if self.quantized else "float"
        return f"in_features={self.in_features}, out_features={self.out_features}, {kind}"


def _on_float_weight(f):
    """A weight function as a function of the float weight. ComfyUI <= 0.3.x's LowVramPatch takes the stored codes
    (it calls the layer's convert/set itself, and set would keep the old scales): its patches are applied here."""
    if _PATCH_SEES_STORAGE and hasattr(f, "patches") and hasattr(f, "key"):
        import comfy.lora
        return lambda w: comfy.lora.calculate_weight(f.patches[f.key], w, f.key)
    return f


def uncounted(module: torch.nn.Module, device: torch.device) -> dict[str, int]:
    """{label (compiled, calls not counted): 0} for the quantized layers of `module`: what the Sample report shows
    when they ran inside torch.compile'd code, where RAN is not touched."""
    return {f"{_label(m.fmt, m.kernel, device)} (compiled, calls not counted)": 0 for m in module.modules()
            if isinstance(m, BridgeLinear) and m.quantized}


def _label(fmt: QuantFormat, kernel: str, device: torch.device) -> str:
    label = f"{fmt.name}/{kernel}"
    return label if device.type == "cuda" else f"{label} (reference math on {device.type})"


_CACHE: dict = {}


def make_ops(resolved: Resolved, family: ModelFamily) -> type:
    """The operations class for a resolved scheme and model family (one class per combination)."""
    key = (resolved.scheme.format_name, resolved.kernel, family.name)
    if key not in _CACHE:
        fmt = resolved.scheme.format if resolved.scheme.quantized else None
        name = f"{fmt.name if fmt else 'float'}_{resolved.kernel}_{family.name}"
        linear = type("Linear", (BridgeLinear,), {"fmt": fmt, "kernel": resolved.kernel, "family": family})
        _CACHE[key] = type(f"QuantOps_{name}", (comfy.ops.manual_cast,), {"Linear": linear})
    return _CACHE[key]
