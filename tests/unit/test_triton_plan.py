"""Launch plans and launch recording (kernels.triton.launch), without a GPU.

Fake compiled kernels log what they are handed: a plan must hand the live tensors' pointers, a fresh
workspace (one kept buffer per thread and stream while small) and output, and the recorded ints and constexprs in signature order, and must decline any
call whose specialization could differ from the recorded one (unaligned, strided, under a profiler).
"""
import threading

import pytest
import torch

pytest.importorskip("triton")

from triton_fakes import FakeDriver, FakeJIT, skip_without_fast_path_api  # noqa: E402

from quant.kernels.triton import launch as triton_launch  # noqa: E402

triton_plan = triton_launch  # the plans live in the same module


@pytest.fixture(autouse=True)
def fakes(monkeypatch):
    skip_without_fast_path_api(triton_launch.triton)
    monkeypatch.setattr(triton_launch, "driver", FakeDriver)
    monkeypatch.setattr(triton_plan, "_PLANS", {})
    monkeypatch.setattr(triton_launch, "FAST_TRITON", (triton_launch.triton.__version__,))
    monkeypatch.setattr(triton_plan, "_capturing", lambda: False)
    monkeypatch.setattr(triton_plan, "_SCRATCH", threading.local())


def test_recording_lists_direct_launches_and_marks_normal_ones():
    fn = FakeJIT()
    launch = triton_launch.DirectLauncher(fn)
    x = torch.zeros(64)
    consts = {"BLOCK": 32, "FLAG": True}
    with triton_launch.recording() as log:
        launch((3,), (x, 64), consts, {"num_warps": 4})  # first call: compiles (normal path)
        launch((3,), (x, 64), consts, {"num_warps": 4})  # direct
    launch((3,), (x, 64), consts, {"num_warps": 4})  # outside the block: not recorded
    assert log[0] is None and len(log) == 2
    rec = log[1]
    assert rec.grid == (3, 1, 1) and rec.args == (x, 64) and rec.tail == (32, True) and rec.function == "fn-handle"
    assert [e[0] for e in fn.log] == ["jit", "direct", "direct"]
    assert fn.log[1] == ("direct", (3, 1, 1, 1234, "fn-handle", "meta", None, None, None, x, 64, 32, True))


def test_a_profiled_launch_is_recorded_as_normal(monkeypatch):
    fn = FakeJIT()
    launch = triton_launch.DirectLauncher(fn)
    x = torch.zeros(64)
    consts = {"BLOCK": 32, "FLAG": True}
    launch((3,), (x, 64), consts, {})
    monkeypatch.setattr(triton_launch, "hooked", lambda: True)
    with triton_launch.recording() as log:
        launch((3,), (x, 64), consts, {})
    assert log == [None] and [e[0] for e in fn.log] == ["jit", "jit"]  # the JIT function took both


def tensors(m=8, k=32, n=16, bias=True):
    x = torch.randn(m, k, dtype=torch.bfloat16)
    q, s = torch.empty(m, k, dtype=torch.int8), torch.empty(m, 1)
    w, sw = torch.empty(n, k, dtype=torch.int8), torch.empty(n, 1)
    b = torch.randn(n, dtype=torch.bfloat16) if bias else None
    out = torch.empty(m, n, dtype=torch.bfloat16)
    return x, q, s, w, sw, b, out


def fake_log(run_log, x, q, s, w, sw, b, out):
    """The two launches the Triton linear makes: quantizer (x -> q, s), GEMM (q, w, out, s, sw, bias)."""
    m, k = x.shape
    n = w.shape[0]
    run = lambda *a: run_log.append(a)  # noqa: E731
    return [triton_launch.Launch(run, "quant", "mq", (m, 1, 1), (x, q, s, m, k, k, k), (127.0, True)),
            triton_launch.Launch(run, "gemm", "mg", (2, 1, 1), (q, w, out, s, sw, sw if b is None else b, m, n, k),
                                 (64, 32))]


@pytest.mark.parametrize("bias", [True, False])
def test_plan_replays_the_launches_with_the_live_tensors(bias):
    x, q, s, w, sw, b, out = tensors(bias=bias)
    key = triton_plan.plan_key(x, w, sw, b, "int8")
    runs = []
    triton_plan.record(key, fake_log(runs, x, q, s, w, sw, b, out), x, q, s, w, sw, b, out, out.shape)
    plan = triton_plan.lookup(key)
    assert isinstance(plan, triton_plan.LinearPlan)
    x2 = torch.randn_like(x)
    y = plan(x2, w, sw, b, 0)
    assert y.shape == (8, 16) and y.dtype == torch.bfloat16
    (qa, ga) = runs
    assert qa[:9] == (8, 1, 1, 1234, "quant", "mq", None, None, None)
    px, pq, ps = qa[9:12]
    assert px == x2.data_ptr() and qa[12:] == (8, 32, 32, 32, 127.0, True)
    assert ps - pq == triton_plan.ALIGN  # q: 8 x 32 bytes, scales at the next 256-byte boundary
    assert ga[:6] == (2, 1, 1, 1234, "gemm", "mg")
    pb = (b if bias else sw).data_ptr()
    assert ga[9:15] == (pq, w.data_ptr(), y.data_ptr(), ps, sw.data_ptr(), pb) and ga[15:] == (8, 16, 32, 64, 32)


def test_plan_declines_calls_it_was_not_recorded_for(monkeypatch):
    x, q, s, w, sw, b, out = tensors()
    key = triton_plan.plan_key(x, w, sw, b, "fp8")
    triton_plan.record(key, fake_log([], x, q, s, w, sw, b, out), x, q, s, w, sw, b, out, out.shape)
    plan = triton_plan.lookup(key)
    buf = torch.empty(8 * 32 + 1, dtype=torch.bfloat16)
    unaligned = buf[1:].view(8, 32)
    assert unaligned.data_ptr() % 16 and plan(unaligned, w, sw, b, 0) is None
    strided = torch.empty(8, 64, dtype=torch.bfloat16)[:, :32]
    assert plan(strided, w, sw, b, 0) is None
    assert plan(x, torch.empty(32, 16, dtype=torch.int8).t(), sw, b, 0) is None
    monkeypatch.setattr(triton_plan, "hooked", lambda: True)
    assert plan(x, w, sw, b, 0) is None


def test_what_is_not_planned():
    x, q, s, w, sw, b, out = tensors()
    key = triton_plan.plan_key(x, w, sw, b, "int8")
    log = fake_log([], x, q, s, w, sw, b, out)
    triton_plan.record(key, [None, log[1]], x, q, s, w, sw, b, out, out.shape)  # a first (compiling) call
    assert key not in triton_plan._PLANS
    other = torch.empty(16, 1)
    bad = [log[0], log[1]._replace(args=(q, w, out, other, sw, b, 8, 16, 32))]
    triton_plan.record(key, bad, x, q, s, w, sw, b, out, out.shape)  # a tensor the plan cannot name
    assert triton_plan._PLANS[key] is False and triton_plan.lookup(key) is None
    key2 = triton_plan.plan_key(x, w, sw, b, "fp8")
    desc = [log[0], log[1]._replace(args=(object(), w, out, s, sw, b, 8, 16, 32))]  # a TMA descriptor
    triton_plan.record(key2, desc, x, q, s, w, sw, b, out, out.shape)
    assert triton_plan._PLANS[key2] is False
    xs = torch.empty(8, 64, dtype=torch.bfloat16)[:, :32]  # recorded on a strided input: wait for a plain one
    key3 = triton_plan.plan_key(xs, w, sw, b, "fp8_block128")
    triton_plan.record(key3, fake_log([], xs, q, s, w, sw, b, out), xs, q, s, w, sw, b, out, out.shape)
    assert key3 not in triton_plan._PLANS


def test_no_plans_off_the_verified_tritons_and_the_size_cap(monkeypatch):
    x, q, s, w, sw, b, out = tensors()
    key = triton_plan.plan_key(x, w, sw, b, "int8")
    monkeypatch.setattr(triton_launch, "FAST_TRITON", ("0.0.",))
    triton_plan.record(key, fake_log([], x, q, s, w, sw, b, out), x, q, s, w, sw, b, out, out.shape)
    assert not triton_plan._PLANS
    monkeypatch.setattr(triton_launch, "FAST_TRITON", (triton_launch.triton.__version__,))
    monkeypatch.setattr(triton_plan, "MAX_PLANS", 2)
    for fmt in ("a", "b", "c"):
        k = triton_plan.plan_key(x, w, sw, b, fmt)
        triton_plan.record(k, fake_log([], x, q, s, w, sw, b, out), x, q, s, w, sw, b, out, out.shape)
    assert list(triton_plan._PLANS) == [triton_plan.plan_key(x, w, sw, b, "c")]


def test_workspace_is_kept_per_thread_and_stream_while_small(monkeypatch):
    dev = torch.device("cpu")
    a = triton_plan.workspace(1000, dev, 7)
    assert triton_plan.workspace(600, dev, 7).data_ptr() == a.data_ptr()  # the next call on the stream reuses it
    assert triton_plan.workspace(600, dev, 8).data_ptr() != a.data_ptr()  # another stream: its own
    grown = triton_plan.workspace(5000, dev, 7)
    assert grown.numel() == 5000 and triton_plan.workspace(1000, dev, 7).data_ptr() == grown.data_ptr()
    other = []
    t = threading.Thread(target=lambda: other.append(triton_plan.workspace(600, dev, 7)))
    t.start()
    t.join()
    assert other[0].data_ptr() != grown.data_ptr()  # another thread on the same stream: its own
    big = triton_plan.SCRATCH_BYTES + 1
    assert triton_plan.workspace(big, dev, 7).data_ptr() != triton_plan.workspace(big, dev, 7).data_ptr()
    monkeypatch.setattr(triton_plan, "_capturing", lambda: True)  # a CUDA graph keeps its own pointer
    captured = triton_plan.workspace(600, dev, 7)
    assert captured.data_ptr() != grown.data_ptr() and captured.numel() == 600


def test_consecutive_planned_calls_share_the_workspace_but_not_the_output():
    x, q, s, w, sw, b, out = tensors()
    key = triton_plan.plan_key(x, w, sw, b, "int8")
    runs = []
    triton_plan.record(key, fake_log(runs, x, q, s, w, sw, b, out), x, q, s, w, sw, b, out, out.shape)
    plan = triton_plan.lookup(key)
    y1, y2 = plan(x, w, sw, b, 0), plan(x, w, sw, b, 0)
    assert runs[0][10] == runs[2][10]  # the quantizer's codes pointer
    assert y1.data_ptr() != y2.data_ptr()


def test_a_plan_takes_the_leading_dims_of_its_key():
    x, q, s, w, sw, b, out = tensors()
    x3 = x.view(2, 4, 32)
    key = triton_plan.plan_key(x3, w, sw, b, "int8")
    runs = []
    triton_plan.record(key, fake_log(runs, x, q, s, w, sw, b, out), x, q, s, w, sw, b, out, (2, 4, 16))
    fresh = torch.randn(2, 4, 32, dtype=torch.bfloat16)
    y = triton_plan.lookup(key)(fresh, w, sw, b, 0)
    assert y.shape == (2, 4, 16) and runs[0][9] == fresh.data_ptr() and runs[1][11] == y.data_ptr()
    assert triton_plan.lookup(key)(fresh.transpose(0, 1), w, sw, b, 0) is None  # not contiguous: generic path
