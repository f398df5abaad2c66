"""Command line: float checkpoint -> quantized checkpoint, streamed tensor by tensor.

    python3 <pack>/scripts/convert.py SRC DST --mm-type NAME [--model-type auto|wan_dit|flux_dit|wan_t5|wan_clip]
        [--layout lightx2v|comfyui] [--keep PATTERN]... [--overwrite]
    (from the pack's folder also: python3 -m quant.checkpoints.convert ...)

Quantizes the linears LightX2V quantizes (quant/families.py), copies every other tensor unchanged,
writes `DST.tmp-<pid>` and renames it at the end, then re-reads DST's header to verify it. Peak
memory stays near one tensor (source read one tensor at a time, never memory-mapped whole).
Interrupted (SIGINT, SIGTERM, SIGHUP), it removes the partial file and exits with 128 + the signal number.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch

from .read import checkpoint_files, detect_headers, load_pth, read_headers
from ..formats import QuantFormat, check_finite
from ..families import ModelFamily, detect_family, get_family, should_quantize
from .layouts import LAYOUTS, Spec
from .safetensors_file import CheckpointError, read_header, read_tensor, write_streaming
from ..schemes import MM_TYPES, QUANT_SCHEMES


@dataclass(frozen=True)
class ConvertReport:
    """What a conversion did: quantized and copied tensor counts, bytes in and out."""

    quantized: int
    copied: int
    src_bytes: int
    dst_bytes: int


def format_for(name: str) -> QuantFormat:
    """The format an mm_type / quant_scheme name stores (kernel suffixes do not matter for files)."""
    scheme = MM_TYPES.get(name) or QUANT_SCHEMES.get(name)
    if scheme is None or not scheme.quantized:
        valid = sorted({n for t in (MM_TYPES, QUANT_SCHEMES) for n, s in t.items() if s.quantized})
        raise ValueError(f"--mm-type {name!r} does not name a quantized format; valid: {', '.join(valid)}")
    return scheme.format


class _Source:
    """Uniform, one-tensor-at-a-time access to a .safetensors file / sharded folder or a .pth file; `detected`
    is what it holds (from the same headers, parsed once)."""

    def __init__(self, path: str):
        self.path = path
        if path.endswith((".pth", ".pt")):
            self._pth = load_pth(path)
            self.entries = {k: (v.dtype, tuple(v.shape)) for k, v in self._pth.items()}
            self.metadata: dict = {}
            self.detected = None  # LightX2V's .pth files are float or theirs: no layout to refuse here
            return
        self._pth = None
        self._where, self.metadata = read_headers(path)
        self.detected = detect_headers(path, self._where, self.metadata)
        self.entries = {k: (info.torch_dtype, info.shape) for k, (_, info) in self._where.items()}

    def get(self, name: str) -> torch.Tensor:
        if self._pth is not None:
            return self._pth[name]
        f, info = self._where[name]
        return read_tensor(f, name, info)


def _plan(src: _Source, family: ModelFamily, fmt: QuantFormat, layout: str,
          keep: Sequence[re.Pattern]) -> tuple[list[Spec], dict[str, str]]:
    """Output specs in source order, and weight keys to quantize -> their layer prefix."""
    specs, quantize = [], {}
    for name, (dtype, shape) in src.entries.items():
        if (should_quantize(family, name) and not any(p.search(name) for p in keep)):
            if len(shape) != 2 or not dtype.is_floating_point:
                raise ValueError(f"'{name}' is {dtype} {tuple(shape)}: expected a float [N, K] weight")
            n, k = shape
            try:
                fmt.check_k(k, f"'{name}' K")
            except ValueError as e:
                raise ValueError(f"{e} (or exclude it with --keep)") from None
            base = name[: -len("weight")]
            quantize[name] = base
            specs.extend(LAYOUTS[layout].specs(base, n, k, fmt))
        else:
            specs.append((name, dtype, tuple(shape)))
    if not quantize:
        raise ValueError(_no_layer_message(src, family))
    return specs, quantize


def _no_layer_message(src: _Source, family: ModelFamily) -> str:
    """Why nothing in src is a layer to quantize: the file is another model type, or none this converter knows."""
    try:
        found = detect_family(src.entries)
    except ValueError:
        return f"no layer of {src.path} matches the {family.name} layers to quantize (not a {family.name} checkpoint?)"
    return (f"{src.path} is a {found} checkpoint, not {family.name}: pass --model-type {found} "
            "(or auto, which reads it from the file)")


def _stream(src: _Source, quantize: dict[str, str], fmt: QuantFormat, layout: str,
            progress: bool) -> Iterator[tuple[str, torch.Tensor]]:
    names = list(src.entries)
    bar = _progress(len(names), progress)
    try:
        for name in names:
            t = src.get(name)
            if name in quantize:
                check_finite(t, name)
                yield from LAYOUTS[layout].tensors(quantize[name], t, fmt)
            else:
                yield name, t
            bar.update(1)
    finally:  # also when the writer stops early: the bar's line ends before any error line
        bar.close()


def _progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:
        enabled = False
    if not enabled:
        class _Null:
            def update(self, n):
                pass

            def close(self):
                pass
        return _Null()
    return tqdm(total=total, unit="tensor", desc="quantizing", file=sys.stderr)


def convert(src: str, dst: str, mm_type: str, model_type: str = "auto", layout: str = "lightx2v",
            keep: Sequence[str] = (), overwrite: bool = False, progress: bool = True) -> ConvertReport:
    """Quantize checkpoint src into dst (see module docstring). Raises ValueError on bad input; writes nothing then."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    fmt = format_for(mm_type)
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError("DST is SRC: refusing to overwrite the source checkpoint")
    if os.path.exists(dst) and not overwrite:
        raise ValueError(f"{dst} exists; pass --overwrite to replace it")
    folder = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(folder):
        raise ValueError(f"the destination folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"the destination folder {folder} is not writable")
    source = _Source(src)
    det = source.detected
    if det is not None and det.format is not None:
        raise ValueError(f"{src} is already quantized ({det.layout} layout, {det.format}); convert a float checkpoint")
    family = get_family(detect_family(source.entries) if model_type == "auto" else model_type)
    specs, quantize = _plan(source, family, fmt, layout, [re.compile(p) for p in keep])
    meta = dict(source.metadata)
    meta["comfyui_quantized"] = json.dumps({"mm_type": mm_type, "format": fmt.name, "model_type": family.name,
                                            "layout": layout})
    meta["_quantization_metadata"] = LAYOUTS[layout].core_metadata([base[:-1] for base in quantize.values()], fmt)
    with contextlib.closing(_stream(source, quantize, fmt, layout, progress)) as tensors:
        write_streaming(dst, specs, tensors, meta)
    written, _ = read_header(dst)
    missing = [name for name, _, _ in specs if name not in written]
    if missing:
        os.remove(dst)
        raise CheckpointError(f"{dst}: verification failed, missing {missing[:3]}")
    src_bytes = sum(os.path.getsize(f) for f in ([src] if os.path.isfile(src) else checkpoint_files(src)))
    return ConvertReport(len(quantize), len(source.entries) - len(quantize), src_bytes, os.path.getsize(dst))


class Interrupted(Exception):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) arrived during a conversion."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


def _raise_interrupted(signum, frame):
    for sig in _STOP_SIGNALS:  # one stop is enough: a second signal must not cut the cleanup short
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def _stop_signals_raise():
    """SIGINT, SIGTERM and SIGHUP raise Interrupted in the block (so the writer's cleanup runs); a signal the
    caller ignores (nohup's SIGHUP) stays ignored."""
    previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, _raise_interrupted)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="convert.py", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help=".safetensors file, sharded folder, or LightX2V .pth")
    p.add_argument("dst", help="output .safetensors file")
    p.add_argument("--mm-type", required=True, help="e.g. int8-triton, fp8-vllm, fp8-b128-triton, nvfp4, int8, fp8")
    p.add_argument("--model-type", default="auto", help="auto, wan_dit, flux_dit, wan_t5, wan_clip")
    p.add_argument("--layout", default="lightx2v", choices=sorted(LAYOUTS))
    p.add_argument("--keep", action="append", default=[], metavar="PATTERN",
                   help="regex of weight keys to leave unquantized (repeat the option for several)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        with _stop_signals_raise():
            r = convert(a.src, a.dst, a.mm_type, a.model_type, a.layout, a.keep, a.overwrite, not a.no_progress)
    except Interrupted as e:
        print(f"error: interrupted by {e}; {a.dst} was not written (partial output removed)", file=sys.stderr)
        return 128 + e.signum
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.dst}: {r.quantized} layers quantized, {r.copied} tensors copied, "
          f"{r.src_bytes / 2**20:.1f} MiB -> {r.dst_bytes / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
