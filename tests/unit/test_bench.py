"""quant.bench on the CPU: argument parsing, shape presets, the table and the JSON report."""
import json

import pytest
import torch

from quant import bench, bench_block


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
    assert data["command"].startswith("python -m quant.bench --shapes 8,64,32")
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
