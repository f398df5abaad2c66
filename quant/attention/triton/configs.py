"""Fixed launch configs of the attention kernel per (GPU arch, padded head dim, mode), from H200 sweeps.

No autotuning: the first call compiles one config. Picked with `python -m bench.attention_ops --configs`
(B2 H12 L32760, and B2 H24 L16384 for D 64; bench/results/h200-attention.md has the numbers): 64 query
rows in one warpgroup (4 warps) per program, 2 programs per SM (~255 / ~210 registers), beat 128 rows in
two warpgroups; `pipe` (the next tile's QK^T issued before this tile's softmax) won for fp8 at D 128 only.
The accurate mode at D 128 (and 96) is faster with Q quantized by its own pre-pass and 128 query rows in
two warpgroups (variant sweep in bench/results/h200-attention.md: 1.05-1.06x SDPA against 0.97-0.99x with Q quantized in
the main kernel, which needs 178 instead of 128 registers there).
"""
from __future__ import annotations

from typing import NamedTuple


class Config(NamedTuple):
    """Tile sizes (queries x keys per step) and launch options of attn_kernel."""
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    pipe: bool  # compute the next key tile's scores before this tile's softmax
    maxnreg: int = 0  # register cap per thread (0: the compiler's choice)
    q_prepass: bool = False  # Q quantized by quantize.quantize_q (read through TMA) instead of in the main kernel


# (compute capability major, head dim padded to a power of two, accurate) -> config
CONFIGS = {
    (9, 128, False): Config(64, 128, 4, 3, True),
    (9, 128, True): Config(128, 64, 8, 3, False, q_prepass=True),
    (9, 64, False): Config(64, 128, 4, 3, False),
    (9, 64, True): Config(64, 128, 4, 3, False, 168),
}


def pick(cc_major: int, dp: int, accurate: bool) -> Config:
    """The config for this GPU generation, padded head dim and mode (Hopper's for other generations)."""
    return CONFIGS.get((cc_major, dp, accurate)) or CONFIGS[(9, dp, accurate)]
