"""Load test of ``deepfm serve``: throughput and latency percentiles over HTTP, on loopback.

    python benchmarks/loadtest.py --model runs/serve-criteo --data clicks.tsv
    python benchmarks/loadtest.py --model runs/serve-criteo --data clicks.tsv \
        --formats records,columns,arrow --reload-every 2 --docs docs/serving.md

Body formats (``--formats``, for requests of more than one record): ``records``
({"records": [...]}), ``columns`` ({"columns": {field: [...]}}) and ``arrow`` (an Arrow IPC
stream). ``--reload-every S``: after the other cases, one more of ``--reload-seconds`` (60)
with ``--reload-size`` records a request at the largest client count, while the model is
swapped every S seconds (a symlink moved between the model and a copy of it with another
id, then ``POST /admin/reload``): it counts failed requests and answers that name no model.
``--docs PATH`` writes the tables between the ``<!-- loadtest:begin -->`` and
``<!-- loadtest:end -->`` lines of PATH.

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
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from loadtest_report import docs_section, machine, markdown, offline_rate, reload_summary, write_docs

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MODEL_ID = re.compile(rb'"model":\s*"([^"]*)"')


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


ARROW_STREAM = "application/vnd.apache.arrow.stream"
HEADERS = {"records": "application/json", "columns": "application/json", "arrow": ARROW_STREAM}


def encode_body(records: list[dict[str, Any]], fmt: str, numeric: set[str]) -> bytes:
    """One request body of ``records`` in format ``fmt`` (records, columns or arrow)."""
    if fmt == "records":
        return json.dumps({"records": records}).encode()
    names = list(dict.fromkeys(k for r in records for k in r))
    columns = {k: [r.get(k) for r in records] for k in names}
    if fmt == "columns":
        return json.dumps({"columns": columns}).encode()
    import pyarrow as pa

    table = pa.table({k: pa.array(v, pa.float64() if k in numeric else pa.string()) for k, v in columns.items()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def bodies(
    records: list[dict[str, Any]], size: int, count: int, fmt: str = "records", numeric: set[str] | None = None
) -> list[bytes]:
    """``count`` request bodies of ``size`` consecutive records, from random places."""
    rng = random.Random(seed_of(size))
    out = []
    for _ in range(count):
        start = rng.randrange(0, max(len(records) - size, 0) + 1)
        out.append(encode_body(records[start : start + size], fmt, numeric or set()))
    return out


def seed_of(size: int) -> int:
    return size  # the same places for every format of one size: the formats score the same rows


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    i = min(len(sorted_ms) - 1, max(0, round(q / 100 * len(sorted_ms) + 0.5) - 1))  # nearest rank
    return sorted_ms[i]


async def run_case(
    url: str, payloads: list[bytes], clients: int, requests: int, seconds: float, fmt: str = "records"
) -> dict[str, Any]:
    """``clients`` closed-loop clients share ``requests`` requests, stopping at ``seconds``.
    Every answer must name the model that scored it (``"model": id``); they are counted by id."""
    import aiohttp

    latencies: list[float] = []
    errors: dict[str, int] = {}
    models: dict[str, int] = {}
    sent = 0
    deadline = time.perf_counter() + seconds
    headers = {"Content-Type": HEADERS[fmt]}

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while sent < requests and time.perf_counter() < deadline:
            body = payloads[sent % len(payloads)]
            sent += 1
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    answer = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            latencies.append((time.perf_counter() - t0) * 1e3)
            if status != 200:
                errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
                continue
            found = MODEL_ID.search(answer, max(0, len(answer) - 64))  # the last key: cheaper than parsing it all
            if found is None:
                errors["no model id"] = errors.get("no model id", 0) + 1
                continue
            model = found.group(1).decode()
            models[model] = models.get(model, 0) + 1

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
        "models": models,
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


def copy_with_new_id(model: Path, out: Path) -> str:
    """The same weights saved again with one more metrics key: another manifest, so another
    model id, and the same probabilities."""
    from deepfm.bundle import Bundle

    bundle = Bundle.load(model)
    bundle.metrics["loadtest_copy"] = True
    bundle.save(out)
    return Bundle.load(out).model_id


def point(link: Path, target: Path) -> None:
    """Move a symlink atomically, as a daily job replacing the model would."""
    tmp = link.with_name(link.name + ".tmp")
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(target.resolve())
    os.replace(tmp, link)


async def swap_models(
    base: str, link: Path, targets: list[Path], token: str, every: float, seconds: float
) -> dict[str, Any]:
    """Every ``every`` seconds for ``seconds``: move ``link`` to the next target, POST /admin/reload."""
    import aiohttp

    swaps, failures, load_s = 0, 0, []
    start = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        for tick in range(1, math.ceil(seconds / every)):  # every tick inside the load
            await asyncio.sleep(max(0.0, start + tick * every - time.perf_counter()))  # on the clock, not after
            point(link, targets[(swaps + failures + 1) % len(targets)])
            headers = {"Authorization": f"Bearer {token}"}
            async with session.post(f"{base}/admin/reload", headers=headers) as resp:
                answer = await resp.json()
            if resp.status == 200 and answer.get("swapped"):
                swaps += 1
                load_s.append(answer["load_seconds"])
            else:
                failures += 1
                print(f"reload failed: {resp.status} {answer}", file=sys.stderr)
    return {"swaps": swaps, "reload_failures": failures, "load_seconds_max": max(load_s, default=None)}


async def reload_case(
    base: str, link: Path, targets: list[Path], token: str, payloads: list[bytes], args: Any
) -> dict[str, Any]:
    clients = max(int(c) for c in args.clients.split(","))
    load = run_case(f"{base}/predict", payloads, clients, 10**9, args.reload_seconds)
    swapper = swap_models(base, link, targets, token, args.reload_every, args.reload_seconds)
    result, swaps = await asyncio.gather(load, swapper)
    return {"size": args.reload_size, "clients": clients, "every_s": args.reload_every, "load": result, **swaps}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="model folder (to serve, and to read --data with)")
    ap.add_argument("--data", type=Path, required=True, help="rows to build requests from")
    ap.add_argument("--url", help="a server already running on loopback, e.g. http://127.0.0.1:8000")
    ap.add_argument("--engine", choices=["torch", "onnx"], default="torch")
    ap.add_argument("--onnx", type=Path, help="for --engine onnx (default <model>/model.onnx)")
    ap.add_argument("--workers", type=int, default=1, help="server processes")
    ap.add_argument("--threads", type=int, default=1, help="the server's model threads per worker")
    ap.add_argument("--sizes", default="1,256", help="records per request")
    ap.add_argument("--clients", default="1,10,100", help="concurrent clients")
    ap.add_argument("--formats", default="records", help="bodies for requests of more records: records,columns,arrow")
    ap.add_argument("--requests", type=int, default=10_000, help="requests per case with 1 record")
    ap.add_argument("--large-requests", type=int, default=2_000, help="requests per case with more records")
    ap.add_argument("--seconds", type=float, default=60, help="time limit per case")
    ap.add_argument("--warmup", type=int, default=200, help="unmeasured requests before each case")
    ap.add_argument(
        "--reload-every", type=float, default=0, help="seconds between model swaps in the reload case (0: none)"
    )
    ap.add_argument("--reload-seconds", type=float, default=60, help="length of the reload case")
    ap.add_argument("--reload-size", type=int, default=1, help="records per request in the reload case")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--docs", type=Path, help="write the tables into this page, between its loadtest markers")
    args = ap.parse_args()
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        raise SystemExit(f"--url must be on this machine's loopback ({sorted(LOOPBACK)}), got {args.url}")
    if args.url and args.reload_every:
        raise SystemExit("--reload-every needs the server this script starts (not --url): it moves its model link")
    return args


def start_server(
    args: argparse.Namespace, model: Path, log: Any, env: dict[str, str]
) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    command = [
        sys.executable, "-m", "deepfm", "serve", str(model), "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(args.workers), "--threads", str(args.threads), "--engine", args.engine, "--quiet",
    ]  # fmt: skip
    if args.onnx:
        command += ["--onnx", str(args.onnx)]
    proc = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **env}
    )
    return f"http://127.0.0.1:{port}", proc


def measure(
    base: str, proc: subprocess.Popen[bytes] | None, records: list[dict[str, Any]], numeric: set[str], args: Any
) -> list[dict[str, Any]]:
    """Every case: sizes x formats x client counts."""
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for fmt in args.formats.split(",") if size > 1 else ["records"]:
            payloads = bodies(records, size, 64 if size > 1 else 512, fmt, numeric)
            n = args.requests if size == 1 else args.large_requests
            for c in [int(c) for c in args.clients.split(",")]:
                asyncio.run(run_case(f"{base}/predict", payloads, c, min(args.warmup, n), args.seconds, fmt))
                server0 = process_cpu_seconds(proc.pid) if proc else float("nan")
                busy0 = machine_busy_seconds()
                result = asyncio.run(run_case(f"{base}/predict", payloads, c, n, args.seconds, fmt))
                result = {"format": fmt, "size": size, "clients": c, **result}
                if proc:
                    result["server_cpu_s"] = round(process_cpu_seconds(proc.pid) - server0, 2)
                    busy = machine_busy_seconds() - busy0
                    result["other_cpu_s"] = round(max(busy - result["server_cpu_s"] - result["client_cpu_s"], 0.0), 2)
                results.append(result)
                print(json.dumps(result), file=sys.stderr)
    return results


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()
    records = load_records(args.model, args.data, max(int(s) for s in args.sizes.split(",")) * 8)
    numeric = {f.name for f in _schema(args.model).fields if f.kind == "numeric"}
    offline = offline_rate(args.model, args.data, args.threads, args.engine, args.onnx)
    log = tempfile.NamedTemporaryFile(prefix="deepfm-serve-", suffix=".log", delete=False)
    work = tempfile.TemporaryDirectory(prefix="deepfm-loadtest-")
    proc, reload, token = None, None, uuid.uuid4().hex
    link = Path(work.name) / "current"
    targets = [args.model.resolve()]
    if args.reload_every:  # served through a link, so the reload case can move it
        targets.append(Path(work.name) / "copy")
        copy_with_new_id(args.model, targets[1])
        point(link, targets[0])
    try:
        if args.url:
            base = args.url.rstrip("/")
        else:
            model = link if args.reload_every else args.model
            base, proc = start_server(args, model, log, {"DEEPFM_ADMIN_TOKEN": token} if args.reload_every else {})
        health = wait_healthy(base, proc, log.name)
        try:
            import uvloop  # a faster event loop leaves more of the shared CPU to the server

            uvloop.install()
        except ImportError:
            pass
        results = measure(base, proc, records, numeric, args)
        if args.reload_every:
            payloads = bodies(records, args.reload_size, 512 if args.reload_size == 1 else 64, "records", numeric)
            reload = asyncio.run(reload_case(base, link, targets, token, payloads, args))
            print(json.dumps(reload), file=sys.stderr)
    finally:
        if proc is not None:
            stop_server(proc)
        log.close()
        os.unlink(log.name)
        work.cleanup()
    report = {
        "command": " ".join(["python", "benchmarks/loadtest.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "model": health.get("model"),
        "engine": health.get("engine"),
        "workers": args.workers,
        "threads": args.threads,
        "machine": {**machine(load_before), "load_average_after": list(os.getloadavg())},
        "results": results,
        "reload": reload,
        "offline_rows_per_s": offline,
    }
    write_outputs(args, report)


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group; SIGKILL it when it has not left in 40 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def write_outputs(args: argparse.Namespace, report: dict) -> None:
    """The tables on stdout; the report to --json, its section to --docs."""
    print(markdown(report["results"]))
    if report["reload"]:
        print(reload_summary(report["reload"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    if args.docs:
        write_docs(args.docs, docs_section(report))


def _schema(model: Path) -> Any:
    from deepfm.bundle import Bundle

    return Bundle.load(model).config.schema


if __name__ == "__main__":
    main()
