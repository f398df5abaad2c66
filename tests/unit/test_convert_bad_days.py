"""The converter on bad days: stopped by a signal mid-write, misread options, the wrong model type, a missing
folder, started from another folder. Each: one clear line, nothing left on disk, a non-zero exit code.

The signal tests run the real command line in a subprocess whose tensor writes are slowed (so the signal lands
while DST.tmp-PID is being written), wait for the temporary file, then send the signal.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import save_file

from quant.checkpoints import convert as convert_module
from quant.checkpoints.convert import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SLOW_CONVERT = textwrap.dedent("""
    import signal, sys, time
    sys.path.insert(0, {root!r})
    from quant.checkpoints import safetensors_file
    write = safetensors_file.tensor_bytes
    safetensors_file.tensor_bytes = lambda t: (time.sleep(0.05), write(t))[1]  # a slow disk
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever the test runner set
    from quant.checkpoints.convert import main
    sys.exit(main(sys.argv[1:]))
""")


def _error_lines(stderr: str) -> list[str]:
    """stderr less the progress bar's redraws."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and "quantizing" not in line]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_mid_write_leaves_nothing(tmp_path, wan_dit_file, helpers, sig):
    src, _ = wan_dit_file
    dst = tmp_path / "out" / "q.safetensors"
    dst.parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CONVERT.format(root=ROOT), src, str(dst), "--mm-type", "int8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
    deadline = time.time() + 60
    while not helpers.tmp_leftovers(dst.parent) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    if not helpers.tmp_leftovers(dst.parent):
        proc.kill()
        pytest.fail(f"the conversion never started writing: {proc.communicate()[1][-2000:]}")
    time.sleep(0.2)  # a few tensors in
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, (proc.returncode, err)
    lines = _error_lines(err)
    assert lines == [f"error: interrupted by {signal.Signals(sig).name}; {dst} was not written (partial output removed)"], err
    assert "Traceback" not in err
    assert os.listdir(dst.parent) == []


def test_an_ignored_sighup_stays_ignored(monkeypatch, tmp_path, wan_dit_file):
    """Under nohup (SIGHUP ignored) the converter does not start listening to it."""
    monkeypatch.setattr(signal, "getsignal", lambda sig: signal.SIG_IGN if sig == signal.SIGHUP else signal.SIG_DFL)
    installed = []
    real = signal.signal
    monkeypatch.setattr(signal, "signal", lambda sig, h: installed.append((sig, h)) or real(sig, h))
    src, _ = wan_dit_file
    assert main([src, str(tmp_path / "q.safetensors"), "--mm-type", "int8", "--no-progress"]) == 0
    listened = {sig for sig, h in installed if h is convert_module._raise_interrupted}
    assert listened == {signal.SIGINT, signal.SIGTERM}


def test_keep_takes_one_pattern_and_leaves_the_positionals(tmp_path, wan_dit_file, capsys):
    src, sd = wan_dit_file
    dst = tmp_path / "q.safetensors"
    assert main(["--keep", r"ffn\.", src, str(dst), "--mm-type", "int8", "--no-progress"]) == 0
    from quant.checkpoints.safetensors_file import read_header
    header, _ = read_header(str(dst))
    assert header["blocks.0.ffn.0.weight"].dtype == "BF16" and header["blocks.0.self_attn.q.weight"].dtype == "I8"
    dst2 = tmp_path / "q2.safetensors"
    assert main([src, str(dst2), "--keep", r"ffn\.", "--keep", "self_attn", "--mm-type", "int8", "--no-progress"]) == 0
    header, _ = read_header(str(dst2))
    assert header["blocks.0.self_attn.q.weight"].dtype == "BF16" and header["blocks.0.cross_attn.q.weight"].dtype == "I8"


def _t5_file(path) -> str:
    g = torch.Generator().manual_seed(0)
    sd = {"token_embedding.weight": torch.randn(32, 64, generator=g)}
    for b in range(2):
        for lin in ("q", "k", "v", "o"):
            sd[f"blocks.{b}.attn.{lin}.weight"] = torch.randn(64, 64, generator=g)
        sd[f"blocks.{b}.ffn.fc1.weight"] = torch.randn(128, 64, generator=g)
    save_file(sd, str(path))
    return str(path)


def test_a_file_of_another_model_type_says_what_it_is(tmp_path, capsys):
    src = _t5_file(tmp_path / "t5.safetensors")
    dst = tmp_path / "q.safetensors"
    assert main([src, str(dst), "--mm-type", "int8", "--model-type", "wan_dit", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {src} is a wan_t5 checkpoint, not wan_dit: pass --model-type wan_t5 "
                   "(or auto, which reads it from the file)"], err
    assert sorted(os.listdir(tmp_path)) == ["t5.safetensors"]


def test_a_missing_destination_folder_is_one_line(tmp_path, wan_dit_file, capsys):
    src, _ = wan_dit_file
    dst = tmp_path / "no" / "such" / "q.safetensors"
    assert main([src, str(dst), "--mm-type", "int8", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: the destination folder {dst.parent} does not exist"], err
    assert not (tmp_path / "no").exists()


def test_runs_from_any_folder_through_the_script(tmp_path, wan_dit_file):
    src, _ = wan_dit_file
    dst = tmp_path / "q.safetensors"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "convert.py"), src, str(dst), "--mm-type",
                          "int8", "--no-progress"], cwd=str(elsewhere), env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "layers quantized" in out.stdout and dst.exists()
