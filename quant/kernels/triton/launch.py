"""Fast launches of the Triton linear: direct calls of compiled kernels, and per-shape launch plans.

Part 1, direct launches: call the compiled binary straight after the first launch.

`JITFunction.run` re-binds every argument, recomputes the specialization key and looks the kernel up on
each call: tens of microseconds of Python on a server CPU, which is the whole budget of a linear at
small M. `DirectLauncher` does that work once per specialization and afterwards
hands the arguments to the compiled kernel's C launcher. The key it keeps mirrors Triton's own
specialization (tensor dtype and 16-byte alignment; integer equal-to-1, multiple-of-16 and 32/64-bit;
a TMA descriptor's element type and block shape),
so a call never reuses a binary compiled for different assumptions. With launch hooks set (profilers),
or on a Triton whose compiled kernels lack `run` / `function` / `packed_metadata`, calls take the
normal path. `recording()` lists the direct launches of a block of code (the plans below replay them).
`bind()` turns one launch into a call of Triton's C launcher with the constant arguments already in place.

Both parts replay Triton's private launcher API, so they run only on the Triton releases in
FAST_TRITON (read and run on a GPU); on any other release every launch is a plain `kernel[grid](...)`.

Part 2, launch plans: the Triton W8A8 linear's quantizer and GEMM launches recorded once per shape,
then replayed with raw pointers.

At small M a quantized linear is bound by the CPU, not the GPU (~120 us of host
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

import contextlib
import threading
from typing import Callable, Iterator, NamedTuple

import operator
from typing import Optional

import torch
import triton
from torch import Tensor
from triton.runtime import driver

from ...formats.base import round_up

# Triton releases whose compiled-kernel launcher (`CompiledKernel.run`) was read and run on a GPU with
# direct launches, plans and bind()'s C call: its Python __call__ only allocates scratch buffers (none for
# these kernels) and forwards (grid, stream, function, cooperative, pdl, global scratch, profile scratch, *args).
FAST_TRITON = ("3.6.",)


def fast_path() -> bool:
    """Whether this Triton is one whose private launcher the direct launches and plans were verified on."""
    return triton.__version__.startswith(FAST_TRITON)


def _desc_spec(d) -> tuple:
    """A host TMA descriptor: its element type, block shape, base alignment and the 16-divisibility of
    its shape and strides (more than Triton keys on: never less)."""
    return (d.base.dtype, tuple(d.block_shape), d.base.data_ptr() % 16 == 0,
            tuple(v % 16 == 0 for v in (*d.shape, *d.strides)), d.padding)


def _spec(args: tuple) -> tuple:
    """The part of the arguments Triton specializes a compiled kernel on (one comprehension: per call)."""
    return tuple((v.dtype, v.data_ptr() % 16 == 0) if isinstance(v, torch.Tensor)
                 else (v == 1, v % 16 == 0, -(1 << 31) <= v < (1 << 31)) if type(v) is int
                 else _desc_spec(v) if hasattr(v, "block_shape") else v for v in args)


def _hooked(hook) -> bool:
    """Whether a launch hook is installed: Triton >= 3.5 keeps an (empty) HookChain, older ones None."""
    return hook is not None and bool(getattr(hook, "calls", True))


def hooked() -> bool:
    """Whether a launch-enter or -exit hook (a profiler) wants to see every launch (only asked on a
    FAST_TRITON release, which has `triton.knobs`)."""
    runtime = triton.knobs.runtime
    return _hooked(runtime.launch_enter_hook) or _hooked(runtime.launch_exit_hook)


class Launch(NamedTuple):
    """One direct launch: the compiled kernel's launcher, handle and metadata, a 3-D grid, the runtime
    arguments in signature order and the constexpr values that follow them."""

    run: object
    function: object
    metadata: object
    grid: tuple
    args: tuple
    tail: tuple


def launch_compiled(run, function, metadata, grid: tuple, stream: int, args) -> None:
    """Hand arguments (runtime ones, then constexprs) to a compiled kernel's launcher on a 3-D grid."""
    run(grid[0], grid[1], grid[2], stream, function, metadata, None, None, None, *args)


def bind(run, function, metadata, grid: tuple) -> Callable[[int, tuple], None]:
    """launch(stream, args) == launch_compiled(run, function, metadata, grid, stream, args), with what
    does not change between calls bound: on a Triton in _C_LAUNCH_VERIFIED and a kernel that needs no
    scratch memory, straight into the C launcher (~1.3 us a launch less on the device host)."""
    c_launch = getattr(run, "launch", None)
    if (c_launch is None or not fast_path()
            or getattr(run, "global_scratch_size", 1) or getattr(run, "profile_scratch_size", 1)):
        return lambda stream, args: launch_compiled(run, function, metadata, grid, stream, args)
    gx, gy, gz = grid
    coop, pdl = run.launch_cooperative_grid, run.launch_pdl
    return lambda stream, args: c_launch(gx, gy, gz, stream, function, coop, pdl, None, None, metadata,
                                         None, None, None, *args)


_REC = threading.local()


@contextlib.contextmanager
def recording() -> Iterator[list]:
    """Collect this thread's launches in the block: a `Launch` per direct launch, None per launch that
    took Triton's normal path (a first call, a profiler hook)."""
    prev = getattr(_REC, "log", None)
    _REC.log = log = []
    try:
        yield log
    finally:
        _REC.log = prev


class DirectLauncher:
    """launcher(grid, args, consts, options) == fn[grid](*args, **consts, **options), cheaper after the first.

    args: the kernel's runtime arguments in signature order (tensors and ints), which must all come
    before its constexpr parameters; consts: the constexpr values by name; options: num_warps,
    num_stages, ... (hashable values).
    """

    def __init__(self, fn):
        self.fn = fn
        self.names = fn.arg_names
        self.cache: dict = {}

    def __call__(self, grid: tuple, args: tuple, consts: dict, options: dict) -> None:
        log = getattr(_REC, "log", None)
        if not fast_path() or hooked():
            self._normal(grid, args, consts, options, log)
            return
        device = driver.active.get_current_device()
        key = (device, _spec(args), tuple(consts.items()), tuple(options.items()))
        hit = self.cache.get(key)
        if hit is None:
            kernel = self._normal(grid, args, consts, options, log)
            kernel = kernel.result() if hasattr(kernel, "result") else kernel
            if all(hasattr(kernel, a) for a in ("run", "function", "packed_metadata")):
                self.cache[key] = (kernel, kernel.run, tuple(consts[n] for n in self.names[len(args):]))
            else:  # a Triton without this internal API: keep taking the normal path
                self.cache[key] = False
            return
        if hit is False:
            self._normal(grid, args, consts, options, log)
            return
        kernel, run, tail = hit
        grid3 = (grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1)
        launch_compiled(run, kernel.function, kernel.packed_metadata, grid3, driver.active.get_current_stream(device),
                        (*args, *tail))
        if log is not None:
            log.append(Launch(run, kernel.function, kernel.packed_metadata, grid3, args, tail))

    def _normal(self, grid: tuple, args: tuple, consts: dict, options: dict, log: list | None):
        """Launch through the JIT function (compiling when needed); a recording notes None."""
        kernel = self.fn[grid](*args, **consts, **options)
        if log is not None:
            log.append(None)
        return kernel


def config_launch(cfg, consts: dict) -> tuple[dict, dict]:
    """(consts plus a triton.Config's constexprs, its launch options): the `consts` / `options` a
    DirectLauncher call takes to launch that config."""
    return {**consts, **cfg.kwargs}, {o: v for o, v in cfg.all_kwargs().items() if o not in cfg.kwargs}


def chosen(autotuner, consts: dict) -> tuple[dict, dict]:
    """After an autotuned launch: config_launch() of the config the autotuner picked."""
    return config_launch(autotuner.best_config, consts)


# Part 2: launch plans (see the module docstring).
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
        self.launches = launches  # (bind(...), itemgetter over pointers + consts)
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


def plan_key(x: Tensor, w: Tensor, sw: Tensor, bias: Optional[Tensor], fmt_name: str) -> tuple:
    """What a plan is valid for, besides the per-call checks: shapes, dtypes, format, x's device and
    the current one (last)."""
    return (x.shape, x.dtype, w.shape, w.dtype, sw.shape, sw.dtype, None if bias is None else bias.dtype, fmt_name,
            x.get_device(), driver.active.get_current_device())


def lookup(key: tuple) -> Optional[LinearPlan]:
    """The plan for a key, if one was built."""
    return _PLANS.get(key) or None


def record(key: tuple, log: list, x: Tensor, q: Tensor, s: Tensor, w: Tensor, sw: Tensor,
           bias: Optional[Tensor], out: Tensor, out_shape: tuple) -> None:
    """Build the key's plan from one generic call's launches (recording()) and the
    tensors it used (x and out as the launches saw them: [M, K], [M, N]); the plan's calls return
    out_shape (the caller's leading dims + N: a plan takes x with the leading dims of its key). A first
    call (compiling / autotuning) leaves no plan yet; launches whose arguments are not these tensors and
    ints (TMA descriptors) are marked never to be planned. A call whose tensors are unaligned or strided
    (a specialization the plan's calls would not check for) is not recorded."""
    if not fast_path() or key in _PLANS or len(log) != 2 or any(entry is None for entry in log):
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
