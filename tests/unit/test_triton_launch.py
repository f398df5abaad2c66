"""Direct Triton launches (kernels.triton.launch), size helpers and the kernel order, without a GPU.

A fake JIT function stands in for a compiled kernel: the launcher must compile (take the normal path)
once per specialization, then call the compiled binary with every argument in signature order, and
never reuse a binary for a call whose alignment / integer specialization differs.
"""
import pytest
import torch

triton = pytest.importorskip("triton")

from triton_fakes import FakeDriver, FakeJIT, skip_without_fast_path_api, skip_without_tma  # noqa: E402

from quant import kernels  # noqa: E402
from quant.kernels.triton import launch as triton_launch, tiles as triton_tiles  # noqa: E402


@pytest.fixture
def fake_driver(monkeypatch):
    skip_without_fast_path_api(triton)
    monkeypatch.setattr(triton_launch, "driver", FakeDriver)
    monkeypatch.setattr(triton_launch, "FAST_TRITON", (triton_launch.triton.__version__,))


def test_second_call_goes_straight_to_the_compiled_kernel(fake_driver):
    fn = FakeJIT()
    launch = triton_launch.DirectLauncher(fn)
    x = torch.zeros(64)
    launch((4,), (x, 32), {"BLOCK": 16, "FLAG": True}, {"num_warps": 4})
    launch((5, 2), (x, 32), {"BLOCK": 16, "FLAG": True}, {"num_warps": 4})
    assert fn.compiles == 1
    kind, a = fn.log[-1]
    assert kind == "direct"
    # grid padded to 3-D, current stream, binary handles, no launch metadata or hooks, then all args in order
    assert a[:9] == (5, 2, 1, 1234, "fn-handle", "meta", None, None, None)
    assert a[9] is x and a[10:] == (32, 16, True)


@pytest.mark.parametrize("change", ["misaligned", "int_one", "int_mod16", "int64", "dtype", "const", "warps"])
def test_a_different_specialization_compiles_again(fake_driver, change):
    fn = FakeJIT()
    launch = triton_launch.DirectLauncher(fn)
    buf = torch.zeros(64)
    args, consts, opts = (buf, 32), {"BLOCK": 16, "FLAG": True}, {"num_warps": 4}
    launch((1,), args, consts, opts)
    if change == "misaligned":
        args = (buf[1:], 32)  # 4-byte offset: not 16-byte aligned
    elif change == "int_one":
        args = (buf, 1)
    elif change == "int_mod16":
        args = (buf, 33)
    elif change == "int64":
        args = (buf, 1 << 33)
    elif change == "dtype":
        args = (buf.to(torch.float16), 32)
    elif change == "const":
        consts = {"BLOCK": 32, "FLAG": True}
    else:
        opts = {"num_warps": 8}
    launch((1,), args, consts, opts)
    assert fn.compiles == 2 and fn.log[-1][0] == "jit"
    launch((1,), args, consts, opts)
    assert fn.compiles == 2 and fn.log[-1][0] == "direct"


def test_same_specialization_other_values_reuse_the_binary(fake_driver):
    fn = FakeJIT()
    launch = triton_launch.DirectLauncher(fn)
    launch((1,), (torch.zeros(64), 32), {"BLOCK": 16, "FLAG": True}, {})
    other = torch.ones(128)
    launch((1,), (other, 48), {"BLOCK": 16, "FLAG": True}, {})
    assert fn.compiles == 1 and fn.log[-1][1][9] is other and fn.log[-1][1][10] == 48


def test_launch_hooks_force_the_normal_path(fake_driver, monkeypatch):
    from triton import knobs

    fn = FakeJIT()
    launch = triton_launch.DirectLauncher(fn)
    x = torch.zeros(64)
    launch((1,), (x, 32), {"BLOCK": 16, "FLAG": True}, {})
    hook = knobs.runtime.launch_enter_hook
    if hasattr(hook, "add"):  # Triton >= 3.5: a HookChain
        hook.add(print)
        try:
            launch((1,), (x, 32), {"BLOCK": 16, "FLAG": True}, {})
        finally:
            hook.remove(print)
    else:
        monkeypatch.setattr(knobs.runtime, "launch_enter_hook", print)
        launch((1,), (x, 32), {"BLOCK": 16, "FLAG": True}, {})
    assert fn.log[-1][0] == "jit"


def test_hooked_reads_empty_chains_as_unhooked():
    class Chain:
        def __init__(self, calls):
            self.calls = calls

    assert not triton_launch._hooked(None)
    assert not triton_launch._hooked(Chain([]))
    assert triton_launch._hooked(Chain([print]))
    assert triton_launch._hooked(print)


class FakeLauncher:
    """A compiled kernel's launcher: the Python wrapper and the C function under it log what they get."""

    launch_cooperative_grid, launch_pdl = False, True

    def __init__(self, scratch=0):
        self.log = []
        self.global_scratch_size = self.profile_scratch_size = scratch

    def __call__(self, *a):
        self.log.append(("wrapper", a))

    def launch(self, *a):
        self.log.append(("c", a))


def test_bind_calls_the_c_launcher_only_where_verified(monkeypatch):
    monkeypatch.setattr(triton_launch, "FAST_TRITON", (triton.__version__,))
    run = FakeLauncher()
    triton_launch.bind(run, "fn", "meta", (3, 2, 1))(99, (7, 8))
    assert run.log == [("c", (3, 2, 1, 99, "fn", False, True, None, None, "meta", None, None, None, 7, 8))]
    for run in (FakeLauncher(scratch=64), FakeLauncher()):  # needs scratch memory; a Triton not verified
        if not run.global_scratch_size:
            monkeypatch.setattr(triton_launch, "FAST_TRITON", ("0.0.",))
        triton_launch.bind(run, "fn", "meta", (3, 2, 1))(99, (7, 8))
        assert run.log == [("wrapper", (3, 2, 1, 99, "fn", "meta", None, None, None, 7, 8))]


def test_size_helpers():
    assert [triton_tiles.next_pow2(n) for n in (1, 2, 3, 16, 17, 5120)] == [1, 2, 4, 16, 32, 8192]
    assert [triton_tiles.m_bucket(m) for m in (1, 100, 512, 32760, 100000)] == [16, 128, 512, 16384, 16384]


@pytest.mark.parametrize("cc, want", [((9, 0), "triton"), ((10, 0), "triton"), ((8, 9), "torch")])
def test_fp8_prefers_triton_from_hopper_on(monkeypatch, cc, want):
    monkeypatch.setattr(kernels, "capability", lambda device: cc)
    monkeypatch.setattr(kernels, "availability",
                        lambda k, f, d: kernels.Availability(kernels.NATIVE if k in ("torch", "triton")
                                                             else kernels.UNAVAILABLE, ""))
    assert kernels.fastest("fp8", torch.device("cuda")) == want
    assert kernels.fastest("int8", torch.device("cuda")) == "triton"


def test_tma_path_taken_only_where_tma_can_run(monkeypatch):
    from quant.kernels.triton import gemm_tma as tma

    skip_without_tma(tma)

    monkeypatch.setattr(tma, "_hopper", lambda index: True)
    m, k, n = tma.MIN_M, 256, 512
    a, w = torch.zeros(m, k, dtype=torch.int8), torch.zeros(n, k, dtype=torch.int8)
    sa, sw, c = torch.ones(m, 1), torch.ones(n, 1), torch.empty(m, n, dtype=torch.bfloat16)
    assert tma.use_tma(a, sa, w, sw, c)
    assert not tma.use_tma(a[: m - 1], sa[: m - 1], w, sw, c[: m - 1])  # small M: the plain kernel
    assert not tma.use_tma(a, torch.ones(m, 2), w, sw, c)  # block scales: not this kernel's layout
    wide = torch.zeros(n, k + 8, dtype=torch.int8)[:, :k]  # row stride 264 bytes: not 16-byte aligned
    assert not tma.use_tma(a, sa, wide, sw, c)
    monkeypatch.setattr(tma, "_hopper", lambda index: False)
    assert not tma.use_tma(a, sa, w, sw, c)
    monkeypatch.setattr(tma, "_hopper", lambda index: True)
    assert not tma.use_tma(a, sa, w, sw, torch.empty(m, n))  # fp32 output: the plain kernel


def test_triton_without_the_internal_api_keeps_the_normal_path(fake_driver):
    fn = FakeJIT()
    fn_getitem = fn.__getitem__

    class Opaque:  # a compiled kernel without run / function / packed_metadata
        pass

    def getitem(grid):
        launch = fn_getitem(grid)
        return lambda *a, **k: (launch(*a, **k), Opaque())[1]

    fn.__class__ = type("FakeJITOpaque", (FakeJIT,), {"__getitem__": lambda self, grid: getitem(grid)})
    launch = triton_launch.DirectLauncher(fn)
    for _ in range(3):
        launch((1,), (torch.zeros(64), 32), {"BLOCK": 16, "FLAG": True}, {})
    assert fn.compiles == 3 and all(entry[0] == "jit" for entry in fn.log)


def test_tma_descriptors_specialize_on_block_shape_and_alignment(fake_driver):
    from types import SimpleNamespace

    def desc(base, block, shape=(64, 32), strides=(32, 1)):
        return SimpleNamespace(base=base, block_shape=list(block), shape=list(shape), strides=list(strides),
                               padding="zero")

    fn = FakeJIT()
    launch = triton_launch.DirectLauncher(fn)
    buf = torch.zeros(64 * 32)
    launch((1,), (desc(buf, (16, 16)), 32), {"BLOCK": 16, "FLAG": True}, {})
    launch((1,), (desc(torch.ones(64 * 32), (16, 16)), 32), {"BLOCK": 16, "FLAG": True}, {})
    assert fn.compiles == 1  # another tensor, same specialization
    for other in (desc(buf, (32, 16)), desc(buf[1:], (16, 16)), desc(buf, (16, 16), strides=(33, 1))):
        launch((1,), (other, 32), {"BLOCK": 16, "FLAG": True}, {})
    assert fn.compiles == 4


def test_tma_path_needs_k_and_n_of_a_tile(monkeypatch):
    from quant.kernels.triton import gemm_tma as tma

    skip_without_tma(tma)

    monkeypatch.setattr(tma, "_hopper", lambda index: True)
    m = tma.MIN_M
    for k, n, want in ((64, 512, False), (256, 64, False), (128, 128, True)):
        a, w = torch.zeros(m, k, dtype=torch.int8), torch.zeros(n, k, dtype=torch.int8)
        got = tma.use_tma(a, torch.ones(m, 1), w, torch.ones(n, 1), torch.empty(m, n, dtype=torch.bfloat16))
        assert got == want, (k, n)


def _pruned(m, k, grouped=False):
    from quant.kernels.triton import gemm as tg

    nargs = {"M": m, "M_BUCKET": triton_tiles.m_bucket(m), "K": k}
    cfgs = tg._prune(tg.CONFIGS, nargs, GROUPED=grouped, EVEN_K=k % 128 == 0)
    return tg, [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]) for c in cfgs], cfgs


def test_small_m_autotunes_over_the_small_list_only():
    tg, tiles, cfgs = _pruned(512, 4096)
    assert cfgs and all(c in tg.SMALL for c in cfgs)
    assert (64, 64, 256) in tiles and all(bm * bn <= 128 * 128 for bm, bn, _ in tiles)
    tg, tiles, cfgs = _pruned(2048, 4096)  # the bucket edge: still small; wide tiles allowed above 1024
    assert all(c in tg.SMALL for c in cfgs) and (128, 256, 128) in tiles
    tg, tiles, cfgs = _pruned(2049, 4096)
    assert cfgs and all(c in tg.LARGE for c in cfgs)


def test_block_k_256_only_where_it_divides_k_and_never_for_block128():
    _, tiles, _ = _pruned(512, 4224)  # K % 128 == 0 (EVEN_K) but K % 256 != 0: a 256 tile would overrun
    assert tiles and all(bk == 128 for *_, bk in tiles)
    _, tiles, _ = _pruned(512, 4100)  # ragged K: masked loads, any BLOCK_K
    assert any(bk == 256 for *_, bk in tiles)
    tg, tiles, cfgs = _pruned(512, 4096, grouped=True)  # block-128: one weight block per k-tile
    assert cfgs and all(c in tg.LARGE for c in cfgs) and all(bk == 128 for *_, bk in tiles)


def test_tma_autotune_times_each_config_longer_than_tritons_default(monkeypatch):
    from quant.kernels.triton import gemm_tma as tma

    seen = {}
    monkeypatch.setattr(tma.triton.testing, "do_bench", lambda fn, **kw: seen.update(kw) or [1.0])
    assert tma._w8a8_tma_kernel.do_bench is tma._bench
    tma._bench(lambda: None, quantiles=(0.5,))
    assert seen["rep"] >= 400 and seen["quantiles"] == (0.5,)


def test_chosen_splits_the_autotuned_config_into_constexprs_and_launch_options():
    import triton

    class Tuned:
        best_config = triton.Config({"BLOCK_M": 64, "BLOCK_N": 128}, num_warps=4, num_stages=3)

    consts, options = triton_launch.chosen(Tuned, {"HAS_BIAS": True})
    assert consts == {"HAS_BIAS": True, "BLOCK_M": 64, "BLOCK_N": 128}
    assert options["num_warps"] == 4 and options["num_stages"] == 3
    assert not set(options) & set(consts)
