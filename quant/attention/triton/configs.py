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


_DEFAULT = Config(128, 128, 8, 2, False, False)
_SMALL_D = Config(128, 128, 8, 2, False, False)

# (compute capability major, head dim padded to a power of two, accurate) -> config
CONFIGS = {
    (9, 128, False): _DEFAULT,
    (9, 128, True): _DEFAULT,
    (9, 64, False): _SMALL_D,
    (9, 64, True): _SMALL_D,
}


def pick(cc_major: int, dp: int, accurate: bool) -> Config:
    """The config for this GPU generation, padded head dim and mode (Hopper's for other generations)."""
    return CONFIGS.get((cc_major, dp, accurate)) or CONFIGS[(9, dp, accurate)]
