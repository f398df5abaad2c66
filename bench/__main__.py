"""`python -m bench [--attention | --e2e] ...`: one entry for every benchmark mode.

    python -m bench [...]               linears (and --block, --encoders): bench/linears.py
    python -m bench --attention [...]   attention kernels at the Wan / Flux shapes: bench/attention_ops.py
    python -m bench --e2e [...]         seconds per step inside ComfyUI: bench/e2e.py
    python -m bench --multigpu [...]    one GPU vs MultiGPU CFG Split (two GPUs): bench/multigpu.py
    python -m bench --load [...]        load time and peak host RAM of a whole DiT: bench/load.py
"""
from __future__ import annotations

import importlib
import sys

MODES = {"--attention": "bench.attention_ops", "--e2e": "bench.e2e", "--multigpu": "bench.multigpu",
         "--load": "bench.load"}


def main(argv: list[str]) -> None:
    """Dispatch on the first mode flag found; the rest of argv goes to that mode."""
    for flag, module in MODES.items():
        if flag in argv:
            rest = [a for a in argv if a != flag]
            importlib.import_module(module).main(rest)
            return
    importlib.import_module("bench.linears").main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
