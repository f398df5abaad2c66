"""The autotuner's picks kept across processes: one small JSON file, read before a shape is autotuned.

Without it every new process autotunes each GEMM shape again (20-30 s in a Wan run's first step).
Triton's own `autotune(cache_results=True)` is not used: Triton 3.3 lacks it, and it skips configs
with pre-hooks (the TMA GEMM's). An entry is keyed by the GPU's name, the Triton version, the
kernel (its name, Triton's hash of its source and a digest of its config list) and the launch key
(shape bucket, dtypes, ...); its value is one config of that list (constexprs + launch options).

File: `$COMFYUI_QUANTIZED_CACHE_DIR/triton-autotune.json`, else `$XDG_CACHE_HOME/comfyui-quantized/...`
(`~/.cache/comfyui-quantized/...`); written atomically (temp file + rename, merged with what other
processes wrote). A corrupt or foreign file, or an entry that names no config of the list, is
ignored with one log line (the shape is autotuned as before and the file rewritten).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import threading
from typing import Callable, Optional

import torch

from .launch import chosen, config_launch

log = logging.getLogger(__name__)

FILE_NAME = "triton-autotune.json"
FORMAT = "comfyui-quantized triton autotune 1"
ENV_DIR = "COMFYUI_QUANTIZED_CACHE_DIR"


def cache_path() -> str:
    """Where the file lives (the env override, else the user's cache dir)."""
    folder = os.environ.get(ENV_DIR) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "comfyui-quantized")
    return os.path.join(folder, FILE_NAME)


def _read(path: str) -> dict:
    """The file's entries; {} (with a log line) when it is missing, unreadable, corrupt or not ours."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("comfyui-quantized: ignoring the autotune cache %s (%s)", path, e)
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
        log.warning("comfyui-quantized: ignoring the autotune cache %s (not this pack's format %r)", path, FORMAT)
        return {}
    return data["entries"]


def _write(path: str, entries: dict) -> None:
    """Replace the file atomically (a reader sees the old or the new file, never half of one)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, "entries": entries}, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _config_id(cfg) -> str:
    """A config as JSON text: its constexprs and launch options (what a launch of it takes)."""
    return json.dumps(cfg.all_kwargs(), sort_keys=True)


class TunedConfigs:
    """The kept picks of one autotuned kernel (a @triton.autotune object): pick() for a launch key gives this
    process's pick, else the one kept on disk (recall), else runs the autotuner and keeps its pick (remember)."""

    def __init__(self, autotuner):
        self.autotuner = autotuner
        self.best: dict = {}  # (launch key, device) -> (constexprs incl. the picked config, launch options)
        self.configs = {_config_id(c): c for c in autotuner.configs}
        self._kernel: Optional[str] = None  # name, source hash, config-list digest (on first use: hashing costs)
        self._entries: Optional[dict] = None
        self._lock = threading.Lock()

    def _key(self, key: tuple, device: int) -> str:
        import triton

        if self._kernel is None:
            fn = self.autotuner.fn  # a JITFunction (an InterpretedFunction under TRITON_INTERPRET: no cache_key)
            source = getattr(fn, "cache_key", None) or hashlib.sha256(inspect.getsource(fn.fn).encode()).hexdigest()
            digest = hashlib.sha256("\n".join(self.configs).encode()).hexdigest()[:12]
            self._kernel = f"{fn.__name__}:{source[:16]}:{digest}"
        return " | ".join((torch.cuda.get_device_name(device), "triton " + triton.__version__, self._kernel,
                           repr(tuple(str(v) for v in key))))

    def pick(self, key: tuple, device: int, consts: dict, autotune: Callable[[], object]) -> Optional[tuple[dict, dict]]:
        """(consts + the config's constexprs, launch options) for launch key `key` on CUDA device `device`, for a
        direct launch; None when it had to call autotune() (the autotuned launch then did the work)."""
        hit = self.best.get((key, device))
        if hit is None:
            hit = self.recall(key, device, consts)
            if hit is None:
                autotune()
                self.best[key, device] = self.remember(key, device, consts)
                return None
            self.best[key, device] = hit
        return hit

    def recall(self, key: tuple, device: int, consts: dict) -> Optional[tuple[dict, dict]]:
        """(consts plus the kept config's constexprs, its launch options) for a launch key, or None."""
        with self._lock:
            if self._entries is None:
                self._entries = _read(cache_path())
            entry = self._entries.get(self._key(key, device))
        if entry is None:
            return None
        cfg = self.configs.get(entry) if isinstance(entry, str) else None
        if cfg is None:
            log.warning("comfyui-quantized: the autotune cache names no known config for %s; autotuning it", key)
            return None
        return config_launch(cfg, consts)

    def remember(self, key: tuple, device: int, consts: dict) -> tuple[dict, dict]:
        """After an autotuned launch: keep its pick on disk; returns what recall() will give for the key."""
        name, path = self._key(key, device), cache_path()
        with self._lock:
            entries = _read(path)
            entries[name] = _config_id(self.autotuner.best_config)
            try:
                _write(path, entries)
            except OSError as e:
                log.warning("comfyui-quantized: cannot write the autotune cache %s (%s)", path, e)
            self._entries = entries
        return chosen(self.autotuner, consts)
