"""LightX2V config JSON -> what to load for the DiT, T5 and CLIP, in this pack's scheme names.

Both generations of field names are understood: until 2025-10 `mm_config.mm_type` with the long
`W-...-A-...` names (quantized when not `Default`); since then `dit_quantized` + `dit_quant_scheme`
with the short ones. T5 / CLIP: `{t5,clip}_quantized`, `{t5,clip}_quant_scheme`,
`{t5,clip}_quantized_ckpt`, `{t5,clip}_original_ckpt`; Wan 2.2: `{high,low}_noise_{quantized,original}_ckpt`.
A component's file is its quantized checkpoint when it is quantized and one is named, else its
original one (LightX2V's rule). A scheme whose kernel cannot run here becomes the same format on
the fastest kernel that does (a config is portable); each such change is returned as a message.
Attention: `self_attn_1_type` (`attn_type` in other models' configs) names the kernel for every attention
call of the model (ATTENTION_NAMES; short key sequences such as cross-attention take SDPA by the kernel's
own rules); a name without a kernel here, or one that cannot run here, becomes `auto`, with a message.
Fields this pack does not use are returned, so the caller can log them once.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch

from ..attention import AUTO, availability as attention_availability
from ..formats import FORMATS
from ..kernels import availability, fastest
from ..schemes import DEFAULT, TABLES, names

# LightX2V names from before the 2025-10 rename (PR #375) that the scheme tables do not list -> successor.
LEGACY_NAMES = {
    "W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Sgl-ActVllm": "fp8-sgl",
    "W-fp8-channel-sym-A-fp8-channel-sym-dynamic-Vllm-ActSgl": "fp8-vllm",
    "W-int8-channel-sym-A-int8-channel-sym-dynamic-Sgl-ActVllm": "int8-sgl",
    "W-int8-channel-sym-A-int8-channel-sym-dynamic-Torchao": "int8-torchao",
    "W-fp8-block128-sym-A-fp8-channel-group128-sym-dynamic-Deepgemm-ActSgl": "fp8-b128-deepgemm",
}

# Component -> (scheme table, quantized flag field, scheme field, quantized ckpt field, original ckpt field,
#               LightX2V's default quantized file name, `{}` = the scheme's format prefix).
_TEXT_FIELDS = {
    "t5": ("quant_scheme", "t5_quantized", "t5_quant_scheme", "t5_quantized_ckpt", "t5_original_ckpt",
           "models_t5_umt5-xxl-enc-{}.pth"),
    "clip": ("quant_scheme", "clip_quantized", "clip_quant_scheme", "clip_quantized_ckpt", "clip_original_ckpt",
             "models_clip_open-clip-xlm-roberta-large-vit-huge-14-{}.pth"),
}
_EXPERT_FIELDS = {"high_noise": ("high_noise_quantized_ckpt", "high_noise_original_ckpt"),
                  "low_noise": ("low_noise_quantized_ckpt", "low_noise_original_ckpt")}
_MM_CONFIG_KEYS = ("mm_type", "weight_auto_quant")

# LightX2V attention types -> this pack's attention names (quant.attention); others run `auto`.
ATTENTION_NAMES = {"sage_attn2": "qattn", "sage_attn2_k_int8_v_fp8": "qattn", "flash_attn3": "fa3",
                   "flash_attn2": "sdpa", "torch_sdpa": "sdpa"}
_ATTENTION_FIELDS = ("self_attn_1_type", "attn_type")  # the first one present decides
_CROSS_ATTENTION_FIELDS = ("cross_attn_1_type", "cross_attn_2_type")  # same kernel: one per model here


class ConfigError(ValueError):
    """A LightX2V config that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Component:
    """One model of the config: quantized?, this pack's scheme name, the file to load (None = not named)."""

    quantized: bool
    scheme: str
    ckpt: Optional[str]
    scheme_field: str
    ckpt_field: Optional[str]


@dataclass(frozen=True)
class LightX2VConfig:
    """A parsed config: the three components (+ Wan 2.2 experts), LLMC quant_method, unused fields, notes,
    and the attention name (quant.attention) for the DiT."""

    dit: Component
    t5: Component
    clip: Component
    high_noise: Optional[Component]
    low_noise: Optional[Component]
    quant_method: Optional[str]
    unused: tuple[str, ...]
    messages: tuple[str, ...]
    attention: str = AUTO


class _Reader:
    """Field access on the raw dict that remembers which fields were read."""

    def __init__(self, raw: dict):
        self.raw, self.used = raw, set()

    def get(self, field: str, default: Any = None) -> Any:
        self.used.add(field)
        return self.raw.get(field, default)

    def flag(self, field: str) -> bool:
        v = self.get(field, False)
        if not isinstance(v, bool):
            raise ConfigError(f"config field '{field}' must be true or false, not {v!r}")
        return v

    def text(self, field: str, default: Optional[str] = None) -> Optional[str]:
        v = self.get(field, default)
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"config field '{field}' must be a string, not {v!r}")
        return v


def _load(source: Union[dict, str, os.PathLike]) -> tuple[dict, list[str]]:
    """The raw dict and the folders relative paths may be relative to (a config file's own folder)."""
    if isinstance(source, dict):
        return source, []
    text, dirs = str(source), []
    if not text.lstrip().startswith(("{", "[")):
        if not os.path.isfile(text):
            raise ConfigError(f"config file {text!r} not found")
        dirs = [os.path.dirname(os.path.abspath(text))]
        with open(text, encoding="utf-8") as f:
            text = f.read()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError("config must be a JSON object")
    return raw, dirs


def resolve_path(value: Any, field: str, dirs: Sequence[str]) -> str:
    """An existing file/folder for a `*_ckpt` field: absolute, else relative to (or named in) one of dirs."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"config field '{field}' must be a path, not {value!r}")
    path = os.path.expanduser(value)
    if os.path.isabs(path):
        if os.path.exists(path):
            return path
        raise ConfigError(f"config field '{field}': {value!r} does not exist")
    candidates = [os.path.join(d, p) for p in (path, os.path.basename(path)) for d in dirs]
    for c in candidates:
        if os.path.exists(c):
            return os.path.abspath(c)
    raise ConfigError(f"config field '{field}': {value!r} not found in any model folder "
                      f"({', '.join(dirs) or 'none given'})")


def _by_format(table: str, fmt_name: str, kernel: Optional[str]) -> list[str]:
    return [n for n, s in TABLES[table].items() if s.format_name == fmt_name and s.kernel == kernel]


def resolve_scheme(name: Any, table: str, field: str, device: torch.device) -> tuple[str, Optional[str]]:
    """A LightX2V scheme name -> (a name of this pack's `table` that runs here, message or None).

    Known names keep their format and kernel; LightX2V-only names (legacy long names, the other
    table's names, platform kernels such as `int8-npu`) keep their format. A kernel that cannot run
    here is replaced by the format's fastest kernel, with a message.
    """
    if not isinstance(name, str):
        raise ConfigError(f"config field '{field}' must be a scheme name, not {name!r}")
    written, name = name, LEGACY_NAMES.get(name, name)
    scheme = TABLES[table].get(name) or next((t[name] for t in TABLES.values() if name in t), None)
    if scheme is not None:
        fmt, kernel = scheme.format_name, scheme.kernel
    elif name.split("-")[0] in FORMATS:
        fmt, kernel = name.split("-")[0], "?"
    else:
        raise ConfigError(f"config field '{field}': unknown scheme {written!r}; valid: {', '.join(names(table)[1:])}")
    if fmt is None:
        return DEFAULT, None
    if not any(s.format_name == fmt for s in TABLES[table].values()):
        raise ConfigError(f"config field '{field}': {written!r} ({fmt} weights) is not supported for this model; "
                          f"valid: {', '.join(names(table)[1:])}")
    if kernel is None or (kernel != "?" and availability(kernel, fmt, device).runs):
        found = name if name in TABLES[table] else next(iter(_by_format(table, fmt, kernel)), None)
        if found is not None:
            return found, None if found == written else f"config field '{field}': {written!r} is {found!r} here"
    best = fastest(fmt, device)
    found = (_by_format(table, fmt, None) or _by_format(table, fmt, best))[0]
    why = {"?": "has no kernel in this pack", None: f"is not a {table} name"}.get(
        kernel, f"needs the {kernel} kernel, which cannot run here")
    return found, f"config field '{field}': {written!r} {why}; running {found!r} ({fmt} weights, {best} kernel)"


def resolve_attention(value: Any, field: str, device: torch.device) -> tuple[str, Optional[str]]:
    """A LightX2V attention type -> (a quant.attention name that runs here, or auto; message or None)."""
    if value is None:
        return AUTO, None
    if not isinstance(value, str):
        raise ConfigError(f"config field '{field}' must be an attention type name, not {value!r}")
    name = ATTENTION_NAMES.get(value)
    if name is None:
        return AUTO, f"config field '{field}': {value!r} has no kernel in this pack; running attention 'auto'"
    avail = attention_availability(name, device)
    if not avail.runs:
        return AUTO, (f"config field '{field}': {value!r} is attention {name!r}, which cannot run here "
                      f"({avail.reason}); running attention 'auto'")
    return name, None


def _attention(r: _Reader, device: torch.device, notes: list[str]) -> str:
    """The DiT's attention name from the first attention field present; the cross-attention fields are read too."""
    field = next((f for f in _ATTENTION_FIELDS if f in r.raw), _ATTENTION_FIELDS[0])
    for f in _CROSS_ATTENTION_FIELDS:
        r.get(f)
    name, note = resolve_attention(r.get(field), field, device)
    notes.extend([note] if note else [])
    return name


def _dit(r: _Reader, device: torch.device, notes: list[str]) -> tuple[bool, str, str]:
    """(quantized, scheme, scheme field) of the DiT from either generation of fields."""
    mm = r.get("mm_config")
    if mm is not None and not isinstance(mm, dict):
        raise ConfigError(f"config field 'mm_config' must be an object, not {mm!r}")
    old = None if mm is None else mm.get("mm_type", DEFAULT)
    new_q = r.flag("dit_quantized")
    new = r.get("dit_quant_scheme")
    if old is not None and ("dit_quantized" in r.raw or new is not None) and (old != DEFAULT) != new_q:
        raise ConfigError("config fields 'mm_config.mm_type' and 'dit_quantized' disagree on whether the DiT "
                          "is quantized; keep one of them")
    if old is not None and old != DEFAULT:
        field, written = "mm_config.mm_type", old
    elif new_q:
        if new is None:
            raise ConfigError("config field 'dit_quant_scheme' is missing (dit_quantized is true)")
        field, written = "dit_quant_scheme", new
    else:
        return False, DEFAULT, "dit_quant_scheme"
    scheme, note = resolve_scheme(written, "mm_type", field, device)
    notes.extend([note] if note else [])
    return scheme != DEFAULT, scheme, field


def _text(r: _Reader, comp: str, dirs: Sequence[str], device: torch.device, notes: list[str]) -> Component:
    table, qf, sf, ckf, orf, default_name = _TEXT_FIELDS[comp]
    quantized = r.flag(qf)
    written = r.get(sf)
    if quantized and written is None:
        raise ConfigError(f"config field '{sf}' is missing ({qf} is true)")
    scheme, note = resolve_scheme(written, table, sf, device) if quantized else (DEFAULT, None)
    notes.extend([note] if note else [])
    ckpt, field = _ckpt(r, quantized, ckf, orf, dirs)
    if quantized and ckpt is None:
        guess = default_name.format(written.split("-")[0])
        found = [os.path.join(d, guess) for d in dirs if os.path.isfile(os.path.join(d, guess))]
        ckpt, field = (os.path.abspath(found[0]), ckf) if found else (None, None)
    return Component(scheme != DEFAULT, scheme, ckpt, sf, field)


def _ckpt(r: _Reader, quantized: bool, qfield: str, ofield: str, dirs: Sequence[str]) -> tuple[Optional[str], Optional[str]]:
    """The quantized file when quantized and named, else the original one, else None; and its field."""
    q, o = r.get(qfield), r.get(ofield)
    if quantized and q is not None:
        return resolve_path(q, qfield, dirs), qfield
    if o is not None:
        return resolve_path(o, ofield, dirs), ofield
    return None, None


def parse_config(source: Union[dict, str, os.PathLike], model_dirs: Sequence[str] = (),
                 device: Union[str, torch.device] = "cpu") -> LightX2VConfig:
    """Parse a LightX2V config (dict, JSON text or file path); relative paths resolve in model_dirs."""
    raw, own_dirs = _load(source)
    dirs = [*model_dirs, *own_dirs]
    device = torch.device(device)
    r, notes = _Reader(raw), []
    quantized, scheme, field = _dit(r, device, notes)
    ckpt, ckf = _ckpt(r, quantized, "dit_quantized_ckpt", "dit_original_ckpt", dirs)
    dit = Component(quantized, scheme, ckpt, field, ckf)
    experts = {}
    for name, (qf, of) in _EXPERT_FIELDS.items():
        path, f = _ckpt(r, quantized, qf, of, dirs)
        experts[name] = Component(quantized, scheme, path, field, f) if path else None
    t5, clip = _text(r, "t5", dirs, device, notes), _text(r, "clip", dirs, device, notes)
    quant_method = r.text("quant_method")
    attention = _attention(r, device, notes)
    mm = raw.get("mm_config") or {}
    unused = sorted([k for k in raw if k not in r.used]
                    + [f"mm_config.{k}" for k in mm if k not in _MM_CONFIG_KEYS])
    return LightX2VConfig(dit, t5, clip, experts["high_noise"], experts["low_noise"], quant_method,
                          tuple(unused), tuple(notes), attention)


__all__ = [
    "ATTENTION_NAMES",
    "LEGACY_NAMES",
    "Component",
    "ConfigError",
    "LightX2VConfig",
    "parse_config",
    "resolve_attention",
    "resolve_path",
    "resolve_scheme",
]
