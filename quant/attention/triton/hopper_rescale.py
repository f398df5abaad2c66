"""The accurate mode's lazy accumulator rescale in the Hopper kernel (hopper_loop.attend), in Gluon with inline PTX.

A 16-bit P has range to spare, so the accurate mode's running row max moves only when a tile's row max passes it
by more than TAU_ACCURATE (P <= 2**TAU_ACCURATE then): after the first tiles most rows keep their max, their
rescale factor alpha is exactly 1, and the 64 multiplies per thread of O * alpha can be skipped. Skipping needs a
data-dependent branch, which Gluon cannot express, hence the inline PTX: a branch over the multiplies, taken by
a thread whose two rows kept their max (exact: alpha is 1 there). H200 (bench/results/h200-attention.md):
accurate mode 1.05-1.06x faster at 14B 480p and 1.3B, 0.99x at 720p. The fp8 mode keeps the plain multiply:
e4m3 has no range to spare (P's 2**8 scale would have to drop by TAU), and it measured 1-2% slower with it.

Layout assumed (asserted): O [64, 128] fp32 in the wgmma accumulator layout of one warpgroup, 64 registers a
thread, holding the thread's two rows; the row vectors (SliceLayout(1, mma)) hold those two rows per thread.
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl

TAU_ACCURATE = gl.constexpr(8.0)  # log2 of how far a row max may pass the running max before it moves
_REGS = 64  # accumulator registers a thread: 64 x 128 fp32 over 128 threads


def _rescale_asm(n: int) -> tuple[str, str]:
    """PTX and constraints: outputs $0..n-1 tied to the accumulator inputs, then n alphas, then n flags (only
    the first is read: the thread's rows, OR-ed)."""
    muls = " ".join(f"mul.f32 ${i}, ${n + i}, ${2 * n + i};" for i in range(n))
    asm = f"{{ .reg .pred keep; setp.eq.s32 keep, ${3 * n}, 0; @keep bra SKIP; {muls} SKIP: }}"
    constraints = ",".join(["=f"] * n + [str(i) for i in range(n)] + ["f"] * n + ["r"] * n)
    return asm, constraints


_ASM, _CONSTRAINTS = (gl.constexpr(x) for x in _rescale_asm(_REGS))
_PACK = gl.constexpr(_REGS)
_ANY2 = gl.constexpr("or.b32 $0, $2, $3; mov.b32 $1, $0;")  # both of a thread's rows get the OR of their flags


@gluon.jit
def rescale_lazy(acc, alpha_rows, moved):
    """acc [64, 128] fp32 (accumulator layout) times alpha by rows, skipped for a thread whose rows kept their
    max. alpha_rows: alpha [64, 1] in acc's row layout; moved [64] int32 (SliceLayout(1, mma)), 1 where a row's
    max moved."""
    gl.static_assert(acc.shape[0] == 64 and acc.shape[1] == 128, "the PTX holds 64 accumulator registers a thread")
    any2 = gl.inline_asm_elementwise(_ANY2, "=r,=r,r,r", [moved], dtype=gl.int32, is_pure=True, pack=2)
    flags = gl.expand_dims(gl.convert_layout(any2, gl.SliceLayout(1, acc.type.layout)), 1)
    return gl.inline_asm_elementwise(_ASM, _CONSTRAINTS, [acc, alpha_rows, flags], dtype=gl.float32, is_pure=True,
                                     pack=_PACK)
