"""What the peer benchmarks share (speed.py, accuracy.py): the peers' virtual environment,
running one measured process, and the machine and versions a page reports.

The peers (DeepCTR-Torch, FuxiCTR, pytorch-fm) live in their own virtual environment,
benchmarks/.venv-peers, with torch held at the project's pin; they are never dependencies of
deepfm. Each peer runs benchmarks/peers/<name>_run.py there and prints one JSON line.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CONSTRAINTS = ROOT / "constraints.txt"

PEERS = ["deepctr", "fuxictr", "torchfm"]
DISPLAY = {
    "deepfm": "deepfm",
    "deepfm-defaults": "deepfm, its defaults",
    "deepctr": "DeepCTR-Torch",
    "fuxictr": "FuxiCTR",
    "torchfm": "pytorch-fm",
}
DISTRIBUTION = {
    "deepfm": "deepfm",
    "deepfm-defaults": "deepfm",
    "deepctr": "deepctr-torch",
    "fuxictr": "fuxictr",
    "torchfm": "torchfm",
}

# The peers' environment. torch comes from constraints.txt (the project's CPU build).
# fuxictr declares no torch, so it comes with its own dependencies (polars, pyarrow, ray:
# its modules import them). deepctr-torch and torchfm go in with --no-deps so that no
# resolver can swap torch; what they import is listed beside them.
PEER_PACKAGES = ["torch", "fuxictr==2.3.10", "pandas", "scikit-learn", "tqdm", "requests", "packaging"]
PEER_PACKAGES_NO_DEPS = ["deepctr-torch==0.3.0", "torchfm==0.7.0"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fail(message: str) -> None:
    """Stop the script with its name in front of the message."""
    sys.exit(f"{Path(sys.argv[0]).name}: {message}")


def check_deepfm() -> None:
    probe = subprocess.run([sys.executable, "-c", "import deepfm"], capture_output=True, text=True)
    if probe.returncode != 0:
        fail(
            f"{sys.executable} cannot import deepfm; run it with the project's venv, "
            f"e.g. .venv/bin/python benchmarks/{Path(sys.argv[0]).name}"
        )


def ensure_peer_env(venv: Path) -> Path:
    """Create the peers' venv and install them, unless the same pins are already installed."""
    python = venv / "bin" / "python"
    pin = hashlib.sha256(
        json.dumps([PEER_PACKAGES, PEER_PACKAGES_NO_DEPS, CONSTRAINTS.read_text()]).encode()
    ).hexdigest()
    stamp = venv / ".benchmark-installed"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == pin:
        return python
    log(f"installing the peers into {venv} (once; a few minutes)")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-c", str(CONSTRAINTS)]
    for cmd in (pip + PEER_PACKAGES, pip + ["--no-deps"] + PEER_PACKAGES_NO_DEPS):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            fail(f"installing the peers failed: {shlex.join(cmd)}\n{done.stderr[-3000:]}")
    # Never benchmark against another torch build than deepfm's (a CUDA wheel would also be
    # gigabytes of download): refuse if the resolver picked one.
    probe = subprocess.run(
        [str(python), "-c", "import torch, json; print(json.dumps([torch.__version__, torch.version.cuda]))"],
        capture_output=True,
        text=True,
        check=True,
    )
    version, cuda = json.loads(probe.stdout)
    wanted = pinned_torch()
    if cuda is not None or (wanted and not version.startswith(wanted)):
        fail(f"the peers' venv got torch {version} (CUDA {cuda}); expected the CPU build {wanted}")
    stamp.write_text(pin + "\n")
    return python


def pinned_torch() -> str | None:
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip().startswith("torch=="):
            return line.split("==", 1)[1].split("#")[0].strip()
    return None


def run_measured(
    cmd: list[str], scratch: Path, timeout: float, env: dict[str, str] | None = None
) -> tuple[int, float, float, str, str]:
    """Run cmd; return exit status, wall seconds, peak RSS (MiB) and its output.

    Peak RSS comes from os.wait4 on this child: ru_maxrss of the largest process in its
    tree (it and the children it waited for, e.g. DataLoader workers). RUSAGE_CHILDREN of
    the driver would keep the maximum of all earlier runs, so it cannot tell runs apart.
    """
    out_path, err_path = scratch / "stdout.txt", scratch / "stderr.txt"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, env=env)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, wait_status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(wait_status)  # tell Popen it was reaped
        seconds = time.perf_counter() - t0
    return proc.returncode, seconds, usage.ru_maxrss / 1024, out_path.read_text(), err_path.read_text()


def train_deepfm(
    flags: list[str], seed: int, scratch: Path, cache_dir: Path, timeout: float
) -> tuple[int, float, float, str, Path]:
    """`deepfm train <flags> --seed S` into scratch/model, quiet, with the encoded data cached
    in cache_dir between runs on the same files. Exit status, wall seconds, peak RSS (MiB),
    stderr and the model folder (its metrics.json when the status is 0)."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    model = scratch / "model"
    cmd = [sys.executable, "-m", "deepfm", "train", *flags, "--seed", str(seed), "--out", str(model), "--quiet"]
    env = os.environ | {"DEEPFM_CACHE_DIR": str(cache_dir)}
    status, seconds, rss, _, stderr = run_measured(cmd, scratch, timeout, env=env)
    return status, seconds, rss, stderr, model


def epoch_curve(metrics: dict) -> list[dict]:
    """Each epoch's dense learning rate, train and valid AUC from a run's metrics.json: where
    the run peaked, and what each fall back to the best weights did."""
    keys = ("epoch", "lr", "train_auc", "valid_auc", "fresh_table")
    return [{k: h[k] for k in keys if k in h} for h in metrics.get("history", [])]


def read_json_line(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ValueError("the runner printed no JSON line")
    return json.loads(lines[-1])


def describe_environment(peer_python: Path | None, libs: list[str]) -> dict:
    """Machine and versions, as the pages report them."""
    env: dict = {"cpu": cpu_model(), "cores": os.cpu_count(), "ram_gib": ram_gib(), "os": platform.platform()}
    probe = (
        "import json, platform, importlib.metadata as m, torch\n"
        "names = %r\n"
        "v = {}\n"
        "for n in names:\n"
        "    try: v[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps({'python': platform.python_version(), 'torch_threads': torch.get_num_threads(), 'versions': v}))"
    )
    mine = ["deepfm", "torch", "numpy", "pyarrow"]
    env["deepfm_env"] = _probe(sys.executable, probe % mine)
    if peer_python is not None:
        theirs = ["torch", "numpy", "pandas", "scikit-learn", "polars", "pyarrow"]
        theirs += [DISTRIBUTION[lib] for lib in libs if not lib.startswith("deepfm")]
        env["peers_env"] = _probe(str(peer_python), probe % theirs)
    env["deepfm_commit"] = git("rev-parse", "--short", "HEAD")
    env["deepfm_tree_dirty"] = bool(git("status", "--porcelain", "--", "deepfm"))
    return env


def _probe(python: str, code: str) -> dict:
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr.strip()[-500:]}


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def command_line(script: str) -> str:
    """How this run was started, with its nice level when it ran at another priority."""
    command = f"python benchmarks/{script} " + shlex.join(sys.argv[1:])
    if os.nice(0):  # run at another priority (to keep other jobs on the machine off its cores): say so
        command = f"nice -n {os.nice(0)} {command}"
    return command.strip()
