"""The autotuner's picks kept across processes (kernels.triton.tuned), without a GPU.

A fake autotuner stands in for @triton.autotune: the first process autotunes a launch key and keeps the
pick on disk; a second process (fresh in-memory tables) launches that config without autotuning.
Corrupt, foreign and stale files are ignored with a log line.
"""
import json
import os

import pytest
import torch

triton = pytest.importorskip("triton")

from quant.kernels.triton import gemm, gemm_tma, tuned  # noqa: E402


class FakeTuner:
    """A @triton.autotune object: configs, fn, best_config; launching it "autotunes" (picks configs[pick])."""

    def __init__(self, configs, fn, pick=1):
        self.configs, self.fn, self.pick = configs, fn, pick
        self.tuned = 0
        self.best_config = None

    def __getitem__(self, grid):
        def launch(*args, **kw):
            self.tuned += 1
            self.best_config = self.configs[self.pick]
        return launch


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(tuned.ENV_DIR, str(tmp_path))
    monkeypatch.setattr(tuned.torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    return tmp_path


def _entries(folder) -> dict:
    with open(os.path.join(folder, tuned.FILE_NAME)) as f:
        return json.load(f)["entries"]


def test_path_follows_the_env_override_else_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(tuned.ENV_DIR, str(tmp_path / "x"))
    assert tuned.cache_path() == str(tmp_path / "x" / tuned.FILE_NAME)
    monkeypatch.delenv(tuned.ENV_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tuned.cache_path() == str(tmp_path / "xdg" / "comfyui-quantized" / tuned.FILE_NAME)


def test_round_trip_across_processes(cache_dir):
    tuner = FakeTuner(gemm.CONFIGS, gemm._w8a8_kernel.fn, pick=3)
    tuner.best_config = gemm.CONFIGS[3]
    first = tuned.TunedConfigs(tuner)
    consts = {"HAS_BIAS": True}
    kept = first.remember((256, 5120, 5120, torch.int8), 0, consts)
    assert kept[0] == {**consts, **gemm.CONFIGS[3].kwargs}
    assert kept[1]["num_warps"] == 8 and kept[1]["num_stages"] == 4 and "BLOCK_M" not in kept[1]
    second = tuned.TunedConfigs(tuner)  # a new process: reads the file
    assert second.recall((256, 5120, 5120, torch.int8), 0, consts) == kept
    assert second.recall((512, 5120, 5120, torch.int8), 0, consts) is None  # another key: autotune
    assert not [f for f in os.listdir(cache_dir) if ".tmp-" in f]  # written through a temp file, renamed
    (name,) = _entries(cache_dir)
    assert "NVIDIA H200" in name and f"triton {triton.__version__}" in name and "_w8a8_kernel" in name


def test_other_gpu_or_triton_does_not_reuse_a_pick(cache_dir, monkeypatch):
    tuner = FakeTuner(gemm.CONFIGS, gemm._w8a8_kernel.fn)
    tuner.best_config = gemm.CONFIGS[0]
    tuned.TunedConfigs(tuner).remember((16, 128, 128), 0, {})
    monkeypatch.setattr(tuned.torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert tuned.TunedConfigs(tuner).recall((16, 128, 128), 0, {}) is None
    monkeypatch.setattr(tuned.torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(triton, "__version__", "9.9.9")
    assert tuned.TunedConfigs(tuner).recall((16, 128, 128), 0, {}) is None


@pytest.mark.parametrize("content", ["{not json", '{"format": "someone else", "entries": {}}', "[1, 2]", "\x00\x01"])
def test_corrupt_or_foreign_file_is_ignored_with_a_log_line(cache_dir, caplog, content):
    (cache_dir / tuned.FILE_NAME).write_text(content)
    tuner = FakeTuner(gemm.CONFIGS, gemm._w8a8_kernel.fn)
    with caplog.at_level("WARNING"):
        assert tuned.TunedConfigs(tuner).recall((16, 128, 128), 0, {}) is None
    assert "ignoring the autotune cache" in caplog.text
    tuner.best_config = gemm.CONFIGS[2]
    tuned.TunedConfigs(tuner).remember((16, 128, 128), 0, {})  # rewritten as a valid file
    assert tuned.TunedConfigs(tuner).recall((16, 128, 128), 0, {})[0] == gemm.CONFIGS[2].kwargs


def test_an_entry_naming_no_config_of_the_list_is_ignored(cache_dir, caplog):
    tuner = FakeTuner(gemm.CONFIGS, gemm._w8a8_kernel.fn)
    tuner.best_config = gemm.CONFIGS[0]
    tc = tuned.TunedConfigs(tuner)
    tc.remember((16, 128, 128), 0, {})
    entries = _entries(cache_dir)
    entries = {k: json.dumps({"BLOCK_M": 999, "num_warps": 1}) for k in entries}
    (cache_dir / tuned.FILE_NAME).write_text(json.dumps({"format": tuned.FORMAT, "entries": entries}))
    with caplog.at_level("WARNING"):
        assert tuned.TunedConfigs(tuner).recall((16, 128, 128), 0, {}) is None
    assert "no known config" in caplog.text


def test_unwritable_cache_dir_only_logs(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(tuned.ENV_DIR, str(blocker / "sub"))  # a folder under a file: cannot be made
    monkeypatch.setattr(tuned.torch.cuda, "get_device_name", lambda device=None: "GPU")
    tuner = FakeTuner(gemm.CONFIGS, gemm._w8a8_kernel.fn)
    tuner.best_config = gemm.CONFIGS[0]
    with caplog.at_level("WARNING"):
        tuned.TunedConfigs(tuner).remember((16, 128, 128), 0, {})
    assert "cannot write the autotune cache" in caplog.text


def _direct_log(monkeypatch, module):
    calls = []
    monkeypatch.setattr(module, "_DIRECT", lambda grid, args, consts, options: calls.append((consts, options)))
    return calls  # this process's picks live in the module's _TUNED, new for each "process" below


def test_second_process_gemm_launches_the_kept_config_without_autotuning(cache_dir, monkeypatch):
    a, w = torch.zeros(300, 256, dtype=torch.int8), torch.zeros(512, 256, dtype=torch.int8)
    sa, sw = torch.ones(300, 1), torch.ones(512, 1)
    for process in (1, 2):
        tuner = FakeTuner(gemm.CONFIGS, gemm._w8a8_kernel.fn, pick=4)
        monkeypatch.setattr(gemm, "_w8a8_kernel", tuner)
        monkeypatch.setattr(gemm, "_TUNED", tuned.TunedConfigs(tuner))  # a new process's table
        calls = _direct_log(monkeypatch, gemm)
        gemm.w8a8_gemm(a, sa, w, sw, None, torch.bfloat16, grouped=False)
        gemm.w8a8_gemm(a, sa, w, sw, None, torch.bfloat16, grouped=False)
        assert tuner.tuned == (1 if process == 1 else 0)
        assert len(calls) == (1 if process == 1 else 2)
        assert calls[-1][0]["BLOCK_M"] == gemm.CONFIGS[4].kwargs["BLOCK_M"] and calls[-1][0]["IS_INT"] is True
        assert calls[-1][1]["num_warps"] == gemm.CONFIGS[4].num_warps


def test_second_process_tma_gemm_launches_the_kept_config_without_autotuning(cache_dir, monkeypatch):
    if gemm_tma.TensorDescriptor is None:
        pytest.skip(f"Triton {triton.__version__} has no host TMA descriptors (needs 3.4+)")
    monkeypatch.setattr(gemm_tma, "_sm_count", lambda index: 132)
    a, w = torch.zeros(4096, 256, dtype=torch.int8), torch.zeros(512, 256, dtype=torch.int8)
    sa, sw, c = torch.ones(4096, 1), torch.ones(512, 1), torch.empty(4096, 512, dtype=torch.bfloat16)
    for process in (1, 2):
        tuner = FakeTuner(gemm_tma.CONFIGS, gemm_tma._w8a8_tma_kernel.fn, pick=2)
        monkeypatch.setattr(gemm_tma, "_w8a8_tma_kernel", tuner)
        monkeypatch.setattr(gemm_tma, "_TUNED", tuned.TunedConfigs(tuner))
        calls = _direct_log(monkeypatch, gemm_tma)
        gemm_tma.w8a8_gemm_tma(a, sa, w, sw, None, c)
        assert tuner.tuned == (1 if process == 1 else 0) and len(calls) == (0 if process == 1 else 1)
    assert calls[0][0]["GROUP_M"] == gemm_tma.CONFIGS[2].kwargs["GROUP_M"] and calls[0][0]["NUM_SMS"] == 132


def test_kernels_autotune_with_a_named_timer():
    """@triton.autotune without do_bench asks the GPU driver for a timer when the module is imported
    (Triton 3.3): both GEMMs name theirs, so they import on a machine without a GPU."""
    for kernel, bench in ((gemm._w8a8_kernel, gemm._bench), (gemm_tma._w8a8_tma_kernel, gemm_tma._bench)):
        assert bench in [getattr(kernel, a, None) for a in ("do_bench", "_do_bench")], vars(kernel).keys()
