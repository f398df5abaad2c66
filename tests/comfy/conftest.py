"""Fixtures for tests against a real ComfyUI: locate a checkout, tiny models, a headless server.

ComfyUI is found through COMFYUI_PATH, an enclosing custom_nodes/ folder, or comfy-cli's default
~/comfy/ComfyUI; without one every test here is skipped with a message saying how to provide it.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACK = "comfyui-quantized"
HERE = os.path.dirname(os.path.abspath(__file__))


def _is_comfy(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "main.py")) and os.path.isdir(os.path.join(path, "comfy"))


def find_comfyui() -> str | None:
    """COMFYUI_PATH, else the ComfyUI that holds this repo in custom_nodes/, else ~/comfy/ComfyUI."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        return env if _is_comfy(env) else None
    parent = os.path.dirname(REPO)
    if os.path.basename(parent) == "custom_nodes" and _is_comfy(os.path.dirname(parent)):
        return os.path.dirname(parent)
    default = os.path.expanduser("~/comfy/ComfyUI")
    return default if _is_comfy(default) else None


@pytest.fixture(scope="session")
def comfy_root() -> str:
    root = find_comfyui()
    if root is None:
        pytest.skip("no ComfyUI checkout: set COMFYUI_PATH=/path/to/ComfyUI, put this repo in its custom_nodes/, "
                    "or install one at ~/comfy/ComfyUI (comfy-cli's default)")
    return root


def import_comfy(root: str) -> None:
    """Make `comfy` importable in this process, on the CPU (args.cpu before comfy.model_management)."""
    if root not in sys.path:
        sys.path.insert(0, root)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import comfy.model_management


def load_pack(name: str = "comfyui_quantized"):
    """Import the repo as ComfyUI does: a package from its __init__.py under its folder name."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from bench.comfy_env import load_pack as load

    return load(name)


@pytest.fixture(scope="session")
def comfy_in_process(comfy_root):
    """comfy imported here (CPU) and the pack loaded as a package."""
    import_comfy(comfy_root)
    return load_pack()


@pytest.fixture(scope="session")
def workspace(comfy_root, tmp_path_factory) -> dict:
    """A ComfyUI base directory with the pack linked into custom_nodes/ and tiny models in models/."""
    base = str(tmp_path_factory.mktemp("comfy_base"))
    os.makedirs(os.path.join(base, "custom_nodes"))
    os.symlink(REPO, os.path.join(base, "custom_nodes", PACK))
    os.makedirs(os.path.join(base, "frontend"))
    names = make_tiny(comfy_root, "tiny_models",
                      os.path.join(base, "models"), os.path.join(base, "input"))
    # A T5 file where the DiT loader looks: the "wrong model family" case.
    shutil.copy(os.path.join(base, "models", "text_encoders", names["t5"]),
                os.path.join(base, "models", "diffusion_models", "wrong_family_t5.safetensors"))
    names["wrong_family"] = "wrong_family_t5.safetensors"
    return {"base": base, "names": names, "output": os.path.join(base, "output")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running ComfyUI: queue prompts through /prompt and read /history."""

    def __init__(self, url: str, log: str):
        self.url, self.log = url, log
        self.client_id = uuid.uuid4().hex

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def run(self, graph: dict, timeout: float = 180) -> dict:
        """Queue a prompt and wait for its /history entry (success or error)."""
        code, body = self.post("/prompt", {"prompt": graph, "client_id": self.client_id})
        assert code == 200, f"/prompt refused ({code}): {json.dumps(body)[:2000]}"
        pid, end = body["prompt_id"], time.time() + timeout
        while time.time() < end:
            hist = self.get(f"/history/{pid}")
            if pid in hist and hist[pid].get("status", {}).get("status_str") in ("success", "error"):
                return hist[pid]
            time.sleep(0.1)
        raise TimeoutError(f"prompt {pid} did not finish in {timeout}s; server log: {self.log}")


def execution_error(entry: dict) -> dict | None:
    """The execution_error message of a /history entry, None when the prompt succeeded."""
    for event, data in entry["status"]["messages"]:
        if event == "execution_error":
            return data
    return None


def make_tiny(comfy_root: str, module: str, *args: str) -> dict:
    """Run `<module>.make_all(*args)` (a tiny-model generator in this folder) in a subprocess with comfy on
    the CPU; returns the file names it reports as JSON."""
    script = (f"import sys; sys.path[:0] = [{comfy_root!r}, {HERE!r}]; import comfy.cli_args; "
              f"comfy.cli_args.args.cpu = True; import {module}, json; "
              f"print(json.dumps({module}.make_all(*{list(args)!r})))")
    out = subprocess.run([sys.executable, "-c", script], cwd=comfy_root, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def running_server(comfy_root: str, base: str, log_name: str, extra: list[str]):
    """Start ComfyUI headless on a free port (CPU, base directory `base`, only this pack), wait until it
    answers, yield a Server, stop it at the end. `extra`: more command-line flags."""
    port, log_path = _free_port(), os.path.join(base, log_name)
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", base, "--disable-auto-launch", "--disable-api-nodes",
           "--database-url", "sqlite:///:memory:", "--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK,
           *extra]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=comfy_root, stdout=log, stderr=subprocess.STDOUT)
        srv, end = Server(f"http://127.0.0.1:{port}", log_path), time.time() + 180
        try:
            while True:
                try:
                    srv.get("/system_stats")
                    break
                except (urllib.error.URLError, ConnectionError, OSError):
                    if proc.poll() is not None or time.time() > end:
                        with open(log_path) as f:
                            raise RuntimeError(f"ComfyUI did not start:\n{f.read()[-4000:]}") from None
                    time.sleep(0.5)
            yield srv
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def ok(server: "Server", graph: dict) -> dict:
    """Run a prompt and assert it succeeded (the error and traceback in the message otherwise)."""
    entry = server.run(graph)
    err = execution_error(entry)
    assert err is None, f"{err['node_type']}: {err['exception_message']}\n{''.join(err['traceback'])[-3000:]}"
    return entry


@pytest.fixture(scope="session")
def server(comfy_root, workspace):
    """The real ComfyUI server, headless on a free port, CPU only, with only this pack as custom node."""
    with running_server(comfy_root, workspace["base"], "server.log",
                        ["--front-end-root", os.path.join(workspace["base"], "frontend")]) as srv:
        yield srv
