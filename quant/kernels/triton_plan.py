"""Launch plans for the Triton W8A8 linear: its quantizer and GEMM launches recorded once per shape,
then replayed with raw pointers.

At small M a quantized linear is bound by the CPU, not the GPU (bench/NOTES.md v6-v8: ~120 us of host
time a call on the device machine, bf16's F.linear 28 us), and most of it is Python between the two
launches. A plan keeps, per (x shape and dtype, weight shape and dtype, scale and bias dtypes, format,
device), the two compiled launches with their grids and an argument template (which argument is which
tensor, the rest the recorded ints and constexprs). A call then allocates the output, takes one workspace
(the quantized activation and its scales, which never leave the linear), checks what the recorded
specialization assumed (contiguous tensors, 16-byte aligned pointers) and calls Triton's C launcher
twice. A call that does not fit, or runs under a profiler's launch hooks, returns None: the caller
takes the generic path.

Workspaces up to SCRATCH_BYTES come from one buffer kept per thread, device and CUDA stream (an
allocation saved per call: ~5 us on the device host). Reusing it is safe because the kernels of one
stream run in order: a call's quantizer writes the buffer only after the previous call's GEMM has read
it; each thread has its own, so two threads issuing onto one stream never interleave in it. Under
CUDA-graph capture, and for larger workspaces, each call allocates its own.

Roles in a template: X (activation [..., K], read as [M, K]), Q / S (its quantized codes and scales:
workspace), W / SW (weight [N, K] and its scales), B (bias, or SW where a launch passes it as a
placeholder), C (output [..., N]); indices >= N_ROLES point into the plan's constants.
"""
from __future__ import annotations

import operator
import threading
from typing import Optional

import torch
from torch import Tensor

from ..formats.base import round_up
from .triton_launch import bind, hooked

try:
    from triton.runtime import driver
except ImportError:  # pragma: no cover - depends on the install
    driver = None

ENABLED = True  # False: every call takes the generic path (bench/probe_launch.py times both)
X, Q, S, W, SW, B, C = range(7)
N_ROLES = 7
ALIGN = 256  # the scales' offset in the workspace (the caching allocator's blocks are 512-byte aligned)
MAX_PLANS = 1024  # distinct shapes kept (M follows the prompt / image size); the table is cleared when full
SCRATCH_BYTES = 16 << 20  # largest workspace taken from the kept per-stream buffer (M = 1024 at K = 13824)

_PLANS: dict = {}  # plan key -> LinearPlan, or False where the launches cannot be replayed
_SCRATCH = threading.local()  # .bufs: (device, stream) -> uint8 buffer, this thread's


_capturing = torch.cuda.is_current_stream_capturing  # () -> whether the current stream is capturing a graph


def workspace(nbytes: int, device: torch.device, stream: int) -> Tensor:
    """A uint8 buffer of at least nbytes for one call's launches on `stream` (see the module docstring);
    the caller keeps it referenced until its launches are issued."""
    if nbytes > SCRATCH_BYTES or _capturing():
        return torch.empty(nbytes, dtype=torch.uint8, device=device)
    bufs = _SCRATCH.__dict__.setdefault("bufs", {})
    key = (device, stream)
    buf = bufs.get(key)
    if buf is None or buf.numel() < nbytes:
        buf = bufs[key] = torch.empty(nbytes, dtype=torch.uint8, device=device)
    return buf


class LinearPlan:
    """The recorded launches of one linear shape; call with the live tensors (see module docstring)."""

    __slots__ = ("launches", "consts", "work_bytes", "s_offset", "out_shape", "stream_of")

    def __init__(self, launches: list, consts: tuple, work_bytes: int, s_offset: int, out_shape: tuple):
        self.launches = launches  # (triton_launch.bind(...), itemgetter over pointers + consts)
        self.consts = consts
        self.work_bytes, self.s_offset, self.out_shape = work_bytes, s_offset, out_shape
        self.stream_of = driver.active.get_current_stream  # device -> its current stream (resolved once)

    def __call__(self, x: Tensor, w: Tensor, sw: Tensor, bias: Optional[Tensor], device: int) -> Optional[Tensor]:
        """x [..., K] (the key's shape) -> out [..., N] as the generic path computes it, or None when this
        call does not fit.
        device: the current CUDA device (Triton launches on its current stream)."""
        b = sw if bias is None else bias
        px, pw, psw, pb = x.data_ptr(), w.data_ptr(), sw.data_ptr(), b.data_ptr()
        if (px | pw | psw | pb) & 15 or hooked() or not (
                x.is_contiguous() and w.is_contiguous() and sw.is_contiguous() and b.is_contiguous()):
            return None
        stream = self.stream_of(device)
        work = workspace(self.work_bytes, x.device, stream)
        out = x.new_empty(self.out_shape)
        pq = work.data_ptr()
        values = (px, pq, pq + self.s_offset, pw, psw, pb, out.data_ptr(), *self.consts)
        for launch, pick in self.launches:
            launch(stream, pick(values))
        return out


def plan_key(x: Tensor, w: Tensor, sw: Tensor, bias: Optional[Tensor], fmt: str) -> tuple:
    """What a plan is valid for, besides the per-call checks: shapes, dtypes, format, x's device and
    the current one (last)."""
    return (x.shape, x.dtype, w.shape, w.dtype, sw.shape, sw.dtype, None if bias is None else bias.dtype, fmt,
            x.get_device(), driver.active.get_current_device())


def lookup(key: tuple) -> Optional[LinearPlan]:
    """The plan for a key, if one was built (and plans are enabled)."""
    return _PLANS.get(key) or None if ENABLED else None


def record(key: tuple, log: list, x: Tensor, q: Tensor, s: Tensor, w: Tensor, sw: Tensor,
           bias: Optional[Tensor], out: Tensor, out_shape: tuple) -> None:
    """Build the key's plan from one generic call's launches (kernels.triton_launch.recording) and the
    tensors it used (x and out as the launches saw them: [M, K], [M, N]); the plan's calls return
    out_shape (the caller's leading dims + N: a plan takes x with the leading dims of its key). A first
    call (compiling / autotuning) leaves no plan yet; launches whose arguments are not these tensors and
    ints (TMA descriptors) are marked never to be planned. A call whose tensors are unaligned or strided
    (a specialization the plan's calls would not check for) is not recorded."""
    if not ENABLED or key in _PLANS or len(log) != 2 or any(entry is None for entry in log):
        return
    inputs = (x, w, sw, *(() if bias is None else (bias,)))
    if any(t.data_ptr() % 16 or not t.is_contiguous() for t in inputs):
        return
    if any(t.data_ptr() != t.untyped_storage().data_ptr() for t in (q, s)):
        return  # the workspace layout assumes both start their own storage
    if len(_PLANS) >= MAX_PLANS:
        _PLANS.clear()
    _PLANS[key] = _build(log, x, q, s, w, sw, bias, out, tuple(out_shape)) or False


def _build(log: list, x, q, s, w, sw, bias, out, out_shape: tuple) -> Optional[LinearPlan]:
    roles = {id(x): X, id(q): Q, id(s): S, id(w): W, id(sw): SW, id(out): C}
    if bias is not None:
        roles[id(bias)] = B
    consts: list = []
    launches = []
    for run, function, metadata, grid, args, tail in log:
        picks = []
        for a in args:
            if isinstance(a, Tensor):
                if id(a) not in roles:
                    return None
                picks.append(roles[id(a)])
            elif type(a) is int:
                picks.append(N_ROLES + len(consts))
                consts.append(a)
            else:
                return None
        for v in tail:
            picks.append(N_ROLES + len(consts))
            consts.append(v)
        launches.append((bind(run, function, metadata, grid), operator.itemgetter(*picks)))
    q_bytes = q.untyped_storage().nbytes()
    s_offset = round_up(q_bytes, ALIGN)
    return LinearPlan(launches, tuple(consts), s_offset + s.untyped_storage().nbytes(), s_offset, out_shape)
