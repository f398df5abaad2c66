"""Low-overhead launches of @triton.jit kernels: call the compiled binary straight after the first launch.

`JITFunction.run` re-binds every argument, recomputes the specialization key and looks the kernel up on
each call: tens of microseconds of Python on a server CPU, which is the whole budget of a linear at
small M (bench/NOTES.md v5, v6). `DirectLauncher` does that work once per specialization and afterwards
hands the arguments to the compiled kernel's C launcher. The key it keeps mirrors Triton's own
specialization (tensor dtype and 16-byte alignment; integer equal-to-1, multiple-of-16 and 32/64-bit;
a TMA descriptor's element type and block shape),
so a call never reuses a binary compiled for different assumptions. With launch hooks set (profilers),
or on a Triton whose compiled kernels lack `run` / `function` / `packed_metadata`, calls take the
normal path. `recording()` lists the direct launches of a block of code (kernels.triton_plan replays them).
`bind()` turns one launch into a call of Triton's C launcher with the constant arguments already in place.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator, NamedTuple

import torch
import triton
from triton import knobs
from triton.runtime import driver

# Triton releases whose compiled-kernel launcher (`CompiledKernel.run`) was read and run on a GPU with
# bind()'s direct C call: its Python __call__ only allocates scratch buffers (none for these kernels) and
# forwards (grid, stream, function, cooperative, pdl, global scratch, profile scratch, *args).
_C_LAUNCH_VERIFIED = ("3.6.",)


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
    """Whether a launch-enter or -exit hook (a profiler) wants to see every launch."""
    return _hooked(knobs.runtime.launch_enter_hook) or _hooked(knobs.runtime.launch_exit_hook)


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
    scratch memory, straight into the C launcher (~1.3 us a launch less on the device host, NOTES v9)."""
    c_launch = getattr(run, "launch", None)
    if (c_launch is None or not triton.__version__.startswith(_C_LAUNCH_VERIFIED)
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
        if hooked():
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


def chosen(autotuner, consts: dict) -> tuple[dict, dict]:
    """After an autotuned launch: (consts plus the picked config's constexprs, its launch options), the
    `consts` / `options` a DirectLauncher call takes for the same kernel from then on."""
    cfg = autotuner.best_config
    return {**consts, **cfg.kwargs}, {o: v for o, v in cfg.all_kwargs().items() if o not in cfg.kwargs}
