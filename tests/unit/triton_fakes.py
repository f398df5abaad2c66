"""Stand-ins for Triton's runtime driver and a JIT function in CPU tests of direct launches and launch plans."""


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
