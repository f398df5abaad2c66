"""A Triton off the FAST_TRITON allow-list (e.g. 3.3, PyTorch 2.7's, which has no `triton.knobs`): every launch
is a plain kernel[grid](...), no plan is recorded or replayed, and nothing touches the 3.4+ API.

The module's `triton` is replaced by a stand-in that has a version and nothing else, so any use of
`triton.knobs` (or another newer attribute) on this path fails the test. CI also runs the Triton tests
under a real Triton 3.3 (.ci/run).
"""
import types

import pytest
import torch

pytest.importorskip("triton")

from triton_fakes import FakeDriver, FakeJIT  # noqa: E402

from quant.kernels.triton import launch  # noqa: E402


@pytest.fixture
def old_triton(monkeypatch):
    monkeypatch.setattr(launch, "triton", types.SimpleNamespace(__version__="3.3.1"))  # no knobs, no runtime
    monkeypatch.setattr(launch, "driver", FakeDriver)
    monkeypatch.setattr(launch, "_PLANS", {})


def test_old_triton_is_off_the_allow_list(old_triton):
    assert not launch.fast_path()


def test_every_launch_goes_through_the_jit_function(old_triton):
    fn = FakeJIT()
    direct = launch.DirectLauncher(fn)
    x = torch.zeros(64)
    with launch.recording() as log:
        for _ in range(3):
            direct((4,), (x, 32), {"BLOCK": 16, "FLAG": True}, {"num_warps": 4})
    assert [entry[0] for entry in fn.log] == ["jit"] * 3 and fn.compiles == 3
    assert log == [None] * 3  # every launch took the normal path
    assert not direct.cache


def test_no_plan_is_recorded(old_triton):
    x, q, s = torch.zeros(4, 128), torch.zeros(4, 128, dtype=torch.int8), torch.zeros(4, 1)
    w, sw, out = torch.zeros(8, 128, dtype=torch.int8), torch.zeros(8, 1), torch.zeros(4, 8)
    key = ("a key",)
    fake = launch.Launch(run=None, function=None, metadata=None, grid=(1, 1, 1), args=(), tail=())
    launch.record(key, [fake, fake], x, q, s, w, sw, None, out, (4, 8))
    assert launch.lookup(key) is None and not launch._PLANS


def test_bind_falls_back_to_the_python_launcher(old_triton):
    calls = []

    class Run:
        launch = "a C launcher that must not be called"
        global_scratch_size = profile_scratch_size = 0

        def __call__(self, *a):
            calls.append(a)

    bound = launch.bind(Run(), "fn", "meta", (1, 2, 3))
    bound(7, ("arg",))
    assert calls == [(1, 2, 3, 7, "fn", "meta", None, None, None, "arg")]
