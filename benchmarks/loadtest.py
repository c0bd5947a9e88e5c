"""Load test of ``deepfm serve``: throughput and latency percentiles over HTTP, on loopback.

    python benchmarks/loadtest.py --model runs/serve-criteo --data clicks.tsv

Starts ``deepfm serve`` on a free 127.0.0.1 port (or uses ``--url``, which must be loopback),
builds request bodies from the first rows of ``--data`` (read with the model's own reading
settings), then for each request size (records per request) and number of concurrent
clients sends requests from an asyncio client (aiohttp) until ``--requests`` are done or
``--seconds`` have passed, whichever comes first. Each client sends its next request when
the last one is answered (a closed loop), so latency includes any queueing in the server.

Reports, per case: requests, errors (any status but 200, or a failed connection),
requests/s, records/s, p50/p90/p99/max latency, and the CPU seconds the client, the server
and everything else on the machine used meanwhile: client and server share this machine's
cores, and other work skews the figures. Prints a Markdown table and writes the figures as
JSON (``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def load_records(model: Path, data: Path, rows: int) -> list[dict[str, Any]]:
    """The first ``rows`` rows of ``data`` as records of the model's fields (missing values left out)."""
    from deepfm.bundle import Bundle
    from deepfm.inference.predictor import open_input

    bundle = Bundle.load(model)
    schema = bundle.config.schema
    reader = open_input(bundle, data)
    records: list[dict[str, Any]] = []
    for chunk in reader.chunks(schema.names, schema.numeric_columns):
        for rec in chunk.table.slice(0, rows - len(records)).to_pylist():
            records.append({k: v for k, v in rec.items() if v is not None})
        if len(records) >= rows:
            break
    return records


def bodies(records: list[dict[str, Any]], size: int, count: int, seed: int = 0) -> list[bytes]:
    """``count`` request bodies of ``size`` consecutive records, from random places."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        start = rng.randrange(0, max(len(records) - size, 0) + 1)
        out.append(json.dumps({"records": records[start : start + size]}).encode())
    return out


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    i = min(len(sorted_ms) - 1, max(0, round(q / 100 * len(sorted_ms) + 0.5) - 1))  # nearest rank
    return sorted_ms[i]


async def run_case(url: str, payloads: list[bytes], clients: int, requests: int, seconds: float) -> dict[str, Any]:
    """``clients`` closed-loop clients share ``requests`` requests, stopping at ``seconds``."""
    import aiohttp

    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    deadline = time.perf_counter() + seconds
    headers = {"Content-Type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while sent < requests and time.perf_counter() < deadline:
            body = payloads[sent % len(payloads)]
            sent += 1
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            latencies.append((time.perf_counter() - t0) * 1e3)
            if status != 200:
                errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1

    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    done = sorted(latencies)
    return {
        "requests": sent,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "seconds": round(wall, 2),
        "requests_per_s": round(len(done) / wall, 1),
        "p50_ms": round(percentile(done, 50), 2),
        "p90_ms": round(percentile(done, 90), 2),
        "p99_ms": round(percentile(done, 99), 2),
        "max_ms": round(done[-1], 2) if done else None,
        "client_cpu_s": round(cpu, 2),
    }


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children (uvicorn's workers), Linux."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all processes have used (every core, idle and I/O wait left out), Linux:
    less the client's and the server's, what other work took from this run."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(
    base: str, proc: subprocess.Popen[bytes] | None, log_path: str, timeout: float = 120
) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode} before it was ready; see {log_path}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                return json.loads(r.read())  # type: ignore[no-any-return]
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{base}/health did not answer within {timeout} s")


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("torch", "onnxruntime", "fastapi", "uvicorn", "aiohttp"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average_before": list(load_before),
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| records/request | clients | requests | errors | requests/s | records/s | p50 ms | p99 ms | max ms | client CPU s | server CPU s | other CPU s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['size']} | {r['clients']} | {r['requests']} | {r['errors']} | {r['requests_per_s']:.0f} | "
            f"{r['requests_per_s'] * r['size']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | "
            f"{r['client_cpu_s']:.1f} | {r.get('server_cpu_s', float('nan')):.1f} | {r.get('other_cpu_s', float('nan')):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="model folder (to serve, and to read --data with)")
    ap.add_argument("--data", type=Path, required=True, help="rows to build requests from")
    ap.add_argument("--url", help="a server already running on loopback, e.g. http://127.0.0.1:8000")
    ap.add_argument("--engine", choices=["torch", "onnx"], default="torch")
    ap.add_argument("--onnx", type=Path, help="for --engine onnx (default <model>/model.onnx)")
    ap.add_argument("--workers", type=int, default=1, help="server processes")
    ap.add_argument("--sizes", default="1,256", help="records per request")
    ap.add_argument("--clients", default="1,10,100", help="concurrent clients")
    ap.add_argument("--requests", type=int, default=10_000, help="requests per case with 1 record")
    ap.add_argument("--large-requests", type=int, default=2_000, help="requests per case with more records")
    ap.add_argument("--seconds", type=float, default=60, help="time limit per case")
    ap.add_argument("--warmup", type=int, default=200, help="unmeasured requests before each case")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    clients = [int(c) for c in args.clients.split(",")]

    load_before = os.getloadavg()
    records = load_records(args.model, args.data, max(sizes) * 8)
    proc = None
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        raise SystemExit(f"--url must be on this machine's loopback ({sorted(LOOPBACK)}), got {args.url}")
    log = tempfile.NamedTemporaryFile(prefix="deepfm-serve-", suffix=".log", delete=False)
    if args.url:
        base = args.url.rstrip("/")
    else:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [
            sys.executable,
            "-m",
            "deepfm",
            "serve",
            str(args.model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--engine",
            args.engine,
            "--quiet",
        ]
        if args.onnx:
            command += ["--onnx", str(args.onnx)]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        health = wait_healthy(base, proc, log.name)
        try:
            import uvloop  # a faster event loop leaves more of the shared CPU to the server

            uvloop.install()
        except ImportError:
            pass
        results = []
        for size in sizes:
            payloads = bodies(records, size, 64 if size > 1 else 512)
            n = args.requests if size == 1 else args.large_requests
            for c in clients:
                asyncio.run(run_case(f"{base}/predict", payloads, c, min(args.warmup, n), args.seconds))
                server0 = process_cpu_seconds(proc.pid) if proc else float("nan")
                busy0 = machine_busy_seconds()
                result = asyncio.run(run_case(f"{base}/predict", payloads, c, n, args.seconds))
                result = {"size": size, "clients": c, **result}
                if proc:
                    result["server_cpu_s"] = round(process_cpu_seconds(proc.pid) - server0, 2)
                    busy = machine_busy_seconds() - busy0
                    result["other_cpu_s"] = round(max(busy - result["server_cpu_s"] - result["client_cpu_s"], 0.0), 2)
                results.append(result)
                print(json.dumps(result), file=sys.stderr)
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        os.unlink(log.name)
    report = {
        "command": " ".join(sys.argv),
        "model": health.get("model"),
        "engine": health.get("engine"),
        "workers": args.workers,
        "machine": {**machine(load_before), "load_average_after": list(os.getloadavg())},
        "results": results,
    }
    print(markdown(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
