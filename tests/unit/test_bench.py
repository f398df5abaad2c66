"""bench.linears on the CPU: argument parsing, shape presets, the table and the JSON report."""
import json

import pytest
import torch

from bench import block as bench_block, encoders as bench_encoders, linears as bench


def test_presets_hold_the_issue_shapes():
    assert bench.PRESETS["wan14b"] == [(32760, 5120, 5120), (32760, 5120, 13824), (32760, 13824, 5120)]
    assert bench.PRESETS["wan1.3b"] == [(32760, 1536, 1536), (32760, 1536, 8960), (32760, 8960, 1536)]
    assert bench.PRESETS["small"] == [(512, 4096, 4096)]
    assert bench.PRESETS["t5xxl"][2] == (512, 10240, 4096)
    assert bench.PRESETS["clip-h"][0] == (257, 1280, 1280)


def test_parse_shapes_mixes_presets_and_triples_without_duplicates():
    assert bench.parse_shapes(["small", "512,4096,4096", "8,16,32", "t5xxl"]) == [
        (512, 4096, 4096), (8, 16, 32), (512, 4096, 10240), (512, 10240, 4096)]
    for bad in ("1,2", "a,b,c", "0,4,4", "nope"):
        with pytest.raises(Exception):
            bench.parse_shapes([bad])


def test_bad_shape_and_unknown_mm_type_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--shapes", "1,2"])
    assert "M,K,N" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown or unquantized mm_type"):
        bench.parse_args(["--mm-type", "int9-magic"])


def test_all_expands_to_one_name_per_format_and_kernel():
    names = bench.select_mm_types(["all"])
    assert "int8-triton" in names and "fp8-torch" in names and "fp8-b128-triton" in names
    assert not any(n.startswith("W-") for n in names)  # the long seed names alias the short ones
    keys = [bench._key(n) for n in names]
    assert len(keys) == len(set(keys))


def test_bench_runs_on_cpu_and_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    report = bench.main(["--shapes", "8,64,32", "--mm-type", "int8-torch", "--no-peers",
                         "--device", "cpu", "--json", str(out)])
    rows = report.rows
    assert [r.method for r in rows] == [bench.BASELINE, "int8-torch"]
    base, q = rows
    assert base.ratio == 1.0 and base.w_bytes == 1.0 and base.rel_err < 1e-2
    assert q.kernel == "torch" and q.ms > 0 and q.ratio > 0 and q.tflops >= 0
    assert 0 < q.rel_err < 0.1  # int8 W8A8 on outlier inputs, vs the fp32 reference
    assert q.w_bytes == pytest.approx((32 * 64 + 32 * 4) / (32 * 64 * 2))
    assert "emulated" in q.note  # no GPU: the reference math runs
    text = capsys.readouterr().out
    assert "| 8,64,32 | int8-torch | torch |" in text and "| shape (M,K,N) |" in text
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["torch"] == torch.__version__
    assert data["command"].startswith("python -m bench --shapes 8,64,32")
    assert [r["method"] for r in data["rows"]] == [bench.BASELINE, "int8-torch"]
    assert data["rows"][1]["rel_err"] == pytest.approx(q.rel_err)


def test_unavailable_kernel_is_reported_not_verified():
    rows = bench.bench_shape(4, 32, 16, ["int8-triton"], torch.device("cpu"), bench.make_timer(torch.device("cpu"), 1), [])
    assert rows[1].ms is None and rows[1].note.startswith("not verified") and "CUDA" in rows[1].note
    table = bench.format_table(rows)
    assert table.count("\n") == 3 and "not verified" in table


def test_block_table_formats():
    text = bench.format_block([dict(method="bf16 F.linear", block_ms=64.0, ratio=1.0, linear_ms=26.0, attn_ms=38.0,
                                    other_ms=0.0, linear_share=26 / 64)])
    assert "| bf16 F.linear | 64.00 | 1.000x | 26.00 | 38.00 | 0.00 | 41% |" in text


def test_wan_block_runs_tiny_on_cpu():
    blk = bench_block.WanBlock(dim=64, heads=2, ffn=96, dtype=torch.float32)
    x, ctx = torch.randn(1, 10, 64), torch.randn(1, 5, 64)
    assert blk(x, ctx).shape == (1, 10, 64)


def test_per_method_swaps_every_linear_and_restores_them():
    from bench import models as bench_models
    from quant.linear import QuantLinear

    enc = bench_encoders.T5Encoder(layers=2, dim=64, heads=2, ffn=96, dtype=torch.float32)

    def kinds():
        return sorted(type(m).__name__ for m in enc.modules() if isinstance(m, (torch.nn.Linear, QuantLinear)))

    rows = bench_models.per_method(enc, ["int8-torch", "int8-triton"], torch.device("cpu"),
                                   lambda: dict(kinds=kinds(), ms=2.0))
    assert [r["method"] for r in rows] == [bench.BASELINE, "int8-torch"]  # int8-triton cannot run on a CPU
    assert rows[0]["kinds"] == ["Linear"] * 14 and rows[1]["kinds"] == ["QuantLinear"] * 14
    assert kinds() == ["Linear"] * 14 and len(bench_models.linear_slots(enc)) == 14


def test_per_method_reports_a_failing_method_and_keeps_going(capsys):
    from bench import models as bench_models

    enc = bench_encoders.ClipVision(layers=1, dim=64, heads=2, mlp=96, dtype=torch.float32)
    calls = []

    def measure():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return dict(ms=4.0 / len(calls))

    rows = bench_models.add_ratios(bench_models.per_method(enc, ["int8-torch", "fp8-torch"], torch.device("cpu"), measure), "ms")
    assert [r["method"] for r in rows] == [bench.BASELINE, "fp8-torch"]
    assert [r["ratio"] for r in rows] == [1.0, 3.0]
    assert "int8-torch: not verified: RuntimeError: boom" in capsys.readouterr().err
    assert bench_models.add_ratios([dict(method="int8-torch", ms=1.0)], "ms")[0]["ratio"] is None


@pytest.mark.parametrize("name,cls,kw", [("t5xxl", "T5Encoder", dict(layers=2, dim=64, heads=2, ffn=96)),
                                         ("clip-h", "ClipVision", dict(layers=2, dim=64, heads=2, mlp=96))])
def test_encoder_bench_runs_tiny_on_cpu(name, cls, kw):
    enc = getattr(bench_encoders, cls)(dtype=torch.float32, **kw)
    x = enc.inputs(bench_encoders.ENCODERS[name][1], torch.device("cpu"))
    assert enc(*x).shape == (1, bench_encoders.ENCODERS[name][1], 64)
    rows = bench_encoders.bench_encoder(name, ["int8-torch"], torch.device("cpu"),
                                        bench.make_timer(torch.device("cpu"), 1), model=enc, rounds=2)
    assert [r["method"] for r in rows] == [bench.BASELINE, "int8-torch"]
    assert rows[0]["ratio"] == 1.0 and rows[1]["ms"] > 0 and rows[1]["host_ms"] > 0
    assert rows[0]["round_ratios"] == [1.0, 1.0] and len(rows[1]["round_ratios"]) == 2
    text = bench.format_encoders(rows)
    assert text.count("\n") == 3 and f"| {name} ({bench_encoders.ENCODERS[name][1]}) | int8-torch |" in text


def test_rounds_combine_into_medians_per_method():
    def row(method, ms, ratio):
        return dict(encoder="t5xxl", tokens=512, method=method, ms=ms, host_ms=ms, ratio=ratio)

    runs = [[row("bf16", 10, 1.0), row("a", 20, 0.5)], [row("bf16", 12, 1.0), row("a", 10, 1.2), row("b", 5, 2.4)],
            [row("bf16", 11, 1.0), row("a", 11, 1.0)]]
    out = bench_encoders.combine_rounds(runs)
    assert [r["method"] for r in out] == ["bf16", "a", "b"]
    assert out[1]["ms"] == 11 and out[1]["ratio"] == 1.0 and out[1]["round_ratios"] == [0.5, 1.2, 1.0]
    assert out[2]["round_ratios"] == [2.4] and out[0]["host_ms"] == 11
    assert "| 0.50 / 1.20 / 1.00 |" in bench.format_encoders(out)


def test_encoders_flag_parses():
    assert bench.parse_args(["--encoders"]).encoders == []
    assert bench.parse_args(["--encoders", "clip-h"]).encoders == ["clip-h"]
    assert bench.parse_args([]).encoders is None
    with pytest.raises(SystemExit):
        bench.parse_args(["--encoders", "bert"])
