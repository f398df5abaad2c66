"""Persistent TMA variant of the per-token x per-channel W8A8 GEMM (Hopper+, large M).

C[M, N] = (A[M, K] @ W[N, K]^T) * sa[M] * sw[N] + bias, A/W int8 or e4m3, both K-major. One program
per SM walks the output tiles in the grouped order of tiles.tile_coords; tiles of A and W come
in through TMA descriptors (host-built: sized by the autotuner's pre-hook on a shape's first call,
then for the chosen config on direct launches) and C leaves through one as well, optionally in two
halves (EPI_SPLIT) to leave shared memory to the pipeline. Used by gemm.w8a8_gemm when
`use_tma` says so.
"""
from __future__ import annotations

import functools
import inspect

import torch
import triton
import triton.language as tl
import triton.testing

from ...formats.base import ceil_div
from .launch import DirectLauncher
from .tiles import m_bucket, tile_coords
from .tuned import TunedConfigs

try:  # host-side TMA descriptors: Triton >= 3.4
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - depends on the install
    TensorDescriptor = None
if "warp_specialize" not in inspect.signature(tl.range).parameters:  # the persistent loop's option
    TensorDescriptor = None  # pragma: no cover - depends on the install; use_tma() then never picks this kernel

MIN_M = 4096  # below this, the tile count is too small for a persistent grid to pay off
MIN_KN = 128  # K and N at least one tile wide (what tests/gpu/test_kernels.py covered on the H100)


def block_shapes(meta: dict) -> tuple[list[int], list[int], list[int]]:
    """TMA box of A, W and C for a config (BLOCK_M/N/K, EPI_SPLIT): C is stored in halves when split."""
    bm, bn, bk = meta["BLOCK_M"], meta["BLOCK_N"], meta["BLOCK_K"]
    return [bm, bk], [bn, bk], [bm, bn // 2 if meta["EPI_SPLIT"] else bn]


def descriptors(a: torch.Tensor, w: torch.Tensor, c: torch.Tensor, meta: dict | None) -> tuple:
    """Host TMA descriptors of A [M, K], W [N, K] and C [M, N] (unit column stride) for a config; with
    meta None, placeholder boxes that the autotuner's pre-hook (_set_blocks) sizes for each config it runs."""
    boxes = block_shapes(meta) if meta is not None else [[16, 16]] * 3
    return tuple(TensorDescriptor(t, list(t.shape), [t.stride(0), 1], box) for t, box in zip((a, w, c), boxes))


def _set_blocks(nargs):
    """Autotuner pre-hook: give the descriptors the block shapes of the config being run."""
    for name, box in zip(("a_desc", "b_desc", "c_desc"), block_shapes(nargs)):
        nargs[name].block_shape = box


def _cfg(bm, bn, stages, split, group_m, ws):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": 128, "GROUP_M": group_m,
                          "EPI_SPLIT": split, "WARP_SPEC": ws},
                         num_warps=8, num_stages=stages, pre_hook=_set_blocks)


# The best configs of a config sweep on an H100 (int8 and fp8, Wan 14B and 1.3B shapes, M = 32760):
# (BLOCK_M, BLOCK_N, stages, EPI_SPLIT, GROUP_M, WARP_SPEC); 8 warps each.
CONFIGS = [_cfg(*c) for c in (
    (128, 256, 3, False, 16, False),
    (128, 256, 3, True, 16, False),
    (128, 256, 3, False, 8, False),
    (256, 128, 3, False, 8, False),
    (128, 256, 4, True, 8, False),
    (256, 128, 3, True, 16, False),
    (128, 256, 3, True, 8, True),
)]


def _bench(fn, quantiles):
    """The autotuner's timer: 0.4 s of runs per config. With Triton's default 0.1 s the pick differed
    between processes and was up to 6% off the best config."""
    return triton.testing.do_bench(fn, warmup=25, rep=400, quantiles=quantiles)


@triton.autotune(configs=CONFIGS, key=["M_BUCKET", "N", "K", "IS_INT"], do_bench=_bench)
@triton.jit
def _w8a8_tma_kernel(a_desc, b_desc, c_desc, sa_ptr, sb_ptr, bias_ptr, M, N, K, M_BUCKET,
                     HAS_BIAS: tl.constexpr, IS_INT: tl.constexpr, NUM_SMS: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                     EPI_SPLIT: tl.constexpr, WARP_SPEC: tl.constexpr):
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    acc_dtype = tl.int32 if IS_INT else tl.float32
    for tile in tl.range(tl.program_id(0), num_m * num_n, NUM_SMS, flatten=True, warp_specialize=WARP_SPEC):
        pid_m, pid_n = tile_coords(tile, num_m, num_n, GROUP_M)
        om = pid_m * BLOCK_M
        on = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_dtype)
        for kt in range(k_tiles):
            a = a_desc.load([om, kt * BLOCK_K])
            b = b_desc.load([on, kt * BLOCK_K])
            acc = tl.dot(a, b.T, acc, out_dtype=acc_dtype)
        rm = om + tl.arange(0, BLOCK_M)
        rn = on + tl.arange(0, BLOCK_N)
        sa = tl.load(sa_ptr + rm, mask=rm < M, other=0.0)
        sb = tl.load(sb_ptr + rn, mask=rn < N, other=0.0)
        out = acc.to(tl.float32) * sa[:, None] * sb[None, :]
        if HAS_BIAS:
            out += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        out = out.to(c_desc.dtype)
        if EPI_SPLIT:
            halves = tl.permute(tl.reshape(out, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1))
            left, right = tl.split(halves)
            c_desc.store([om, on], left)
            c_desc.store([om, on + BLOCK_N // 2], right)
        else:
            c_desc.store([om, on], out)


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


@functools.lru_cache(maxsize=None)
def _hopper(index: int) -> bool:
    return torch.cuda.get_device_capability(index) >= (9, 0)


def use_tma(a: torch.Tensor, sa: torch.Tensor, w: torch.Tensor, sw: torch.Tensor, c: torch.Tensor) -> bool:
    """Whether the persistent TMA kernel takes this call: Hopper+, large M, K and N >= 128, per-token x
    per-channel scales with unit row stride, 16-bit output (the configs' shared memory is sized for it),
    16-byte aligned bases and rows (TMA's requirements)."""
    if TensorDescriptor is None or a.shape[0] < MIN_M or min(a.shape[1], w.shape[0]) < MIN_KN:
        return False
    if sa.stride(0) != 1 or sw.stride(0) != 1:
        return False
    if sa.shape[-1] != 1 or sw.shape[-1] != 1 or c.element_size() != 2 or not _hopper(a.device.index or 0):
        return False
    return all(t.data_ptr() % 16 == 0 and t.stride(1) == 1 and (t.stride(0) * t.element_size()) % 16 == 0
               for t in (a, w, c))


_DIRECT = DirectLauncher(_w8a8_tma_kernel.fn)
_TUNED = TunedConfigs(_w8a8_tma_kernel)


def w8a8_gemm_tma(a: torch.Tensor, sa: torch.Tensor, w: torch.Tensor, sw: torch.Tensor,
                  bias: torch.Tensor | None, c: torch.Tensor) -> None:
    """a [M, K], w [N, K] int8/e4m3; sa [M, 1], sw [N, 1] fp32 (unit stride); bias [N] or None -> c [M, N].

    The key's first call runs the autotuner (its pre-hook sizes the descriptors) unless an earlier process
    kept its pick (kernels.triton.tuned); later calls build the descriptors for the chosen config and
    launch the compiled kernel directly (kernels.triton.launch).
    """
    m, k = a.shape
    n = w.shape[0]
    nsm = _sm_count(a.device.index or 0)
    has_bias = bias is not None
    key = (m_bucket(m), n, k, a.dtype, c.dtype, None if bias is None else bias.dtype)
    consts = {"HAS_BIAS": has_bias, "IS_INT": w.dtype == torch.int8, "NUM_SMS": nsm}
    tail = (sa, sw, bias if has_bias else sw, m, n, k, m_bucket(m))
    hit = _TUNED.pick(key, a.device.index or 0, consts, lambda: _w8a8_tma_kernel[lambda meta: grid(meta, m, n, nsm)](
        *descriptors(a, w, c, None), *tail, **consts))
    if hit is not None:
        consts, options = hit
        _DIRECT(grid(consts, m, n, nsm), (*descriptors(a, w, c, consts), *tail), consts, options)


def grid(meta: dict, m: int, n: int, nsm: int) -> tuple[int]:
    """Persistent grid: one program per SM, or per tile when there are fewer tiles."""
    return (min(nsm, ceil_div(m, meta["BLOCK_M"]) * ceil_div(n, meta["BLOCK_N"])),)
