"""Stand-ins for Triton's runtime driver and a JIT function in CPU tests of direct launches and launch plans."""
import pytest


def skip_without_fast_path_api(triton) -> None:
    """Tests that force the direct-launch path need the Triton API it is verified on (triton.knobs: 3.4+)."""
    if not hasattr(triton, "knobs"):
        pytest.skip(f"direct launches and plans run only on FAST_TRITON releases (3.6.x, with triton.knobs); "
                    f"Triton {triton.__version__} always launches through kernel[grid]")


def skip_without_tma(tma) -> None:
    """Tests of the TMA GEMM's host side need host TMA descriptors (Triton 3.4+)."""
    if tma.TensorDescriptor is None:
        pytest.skip("the TMA GEMM needs host TMA descriptors (Triton 3.4+); older Triton never takes it")


class FakeDriver:
    """Mirrors triton.runtime.driver: device 0, stream 1234."""

    class active:  # noqa: N801 - mirrors triton.runtime.driver.active
        @staticmethod
        def get_current_device():
            return 0

        @staticmethod
        def get_current_stream(device):
            return 1234


class FakeCompiled:
    """A compiled kernel: its launcher logs ("direct", arguments)."""

    function = "fn-handle"
    packed_metadata = "meta"

    def __init__(self, log):
        self.log = log

    def run(self, *a):
        self.log.append(("direct", a))


class FakeJIT:
    """A @triton.jit function: each launch through it logs ("jit", grid, args, kwargs) and compiles."""

    arg_names = ["x_ptr", "n", "BLOCK", "FLAG"]

    def __init__(self):
        self.log = []
        self.compiles = 0

    def __getitem__(self, grid):
        def launch(*args, **kw):
            self.compiles += 1
            self.log.append(("jit", grid, args, kw))
            return FakeCompiled(self.log)
        return launch
