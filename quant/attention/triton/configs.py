"""Fixed launch configs of the attention kernel per (GPU arch, padded head dim, mode), from H200 measurements.

No autotuning: the first call compiles one config (bench/attention_ops.py measured the alternatives;
bench/results/h200-attention.md has the numbers).
"""
from __future__ import annotations

from typing import NamedTuple


class Config(NamedTuple):
    """Tile sizes (queries x keys per step) and launch options of attn_kernel."""
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    pipe: bool
    warp_spec: bool
    maxnreg: int = 0  # register cap per thread (0: the compiler's choice)
    lazy: bool = False  # rescale the accumulator only when a row max grew by more than TAU


_FP8 = Config(64, 128, 4, 3, True, False)
_FP8_D64 = Config(64, 128, 4, 3, False, False)
_ACCURATE = Config(64, 64, 4, 3, False, False)
_ACCURATE_D64 = Config(64, 128, 4, 3, False, False, 168)

# (compute capability major, head dim padded to a power of two, accurate) -> config
CONFIGS = {
    (9, 128, False): _FP8,
    (9, 128, True): _ACCURATE,
    (9, 64, False): _FP8_D64,
    (9, 64, True): _ACCURATE_D64,
}


def pick(cc_major: int, dp: int, accurate: bool) -> Config:
    """The config for this GPU generation, padded head dim and mode (Hopper's for other generations)."""
    return CONFIGS.get((cc_major, dp, accurate)) or CONFIGS[(9, dp, accurate)]
