"""The load test's report: the machine, the offline bound measured beside it, the Markdown
tables and the section of docs/serving.md (benchmarks/loadtest.py writes them)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any


def offline_rate(
    model: Path, data: Path, threads: int, engine: str, onnx: Path | None, rows: int = 65536
) -> dict[str, int]:
    """The bound to compare with, measured here and now (before the server starts): the same
    model and engine on ``threads`` threads scoring the first ``rows`` rows of ``data`` (and
    up to the end of the reader's chunk that holds row ``rows``) chunk by chunk, read and encoded once ("encoded") and from the rows each time ("from
    rows": encode + model), each repeated for about 3 seconds."""
    import torch

    from deepfm.inference.predictor import Predictor, open_input

    torch.set_num_threads(threads)
    predictor = Predictor.load(model, engine, onnx, threads=threads)
    schema = predictor.bundle.config.schema
    chunks = []
    for chunk in open_input(predictor.bundle, data).chunks(schema.names, schema.numeric_columns):
        chunks.append(chunk)
        if sum(c.table.num_rows for c in chunks) >= rows:
            break
    encoded = [predictor.pipeline.encode(c, with_labels=False) for c in chunks]
    n = sum(c.table.num_rows for c in chunks)

    def rate(score: Any, parts: list[Any]) -> int:
        for part in parts:  # warm-up
            score(part)
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 3.0:
            for part in parts:
                score(part)
            done += n
        return round(done / (time.perf_counter() - t0))

    return {"encoded": rate(predictor.predict_encoded, encoded), "from_rows": rate(predictor.predict_chunk, chunks)}


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
        "| body | records/request | clients | requests | errors | requests/s | records/s | p50 ms | p99 ms | max ms | client CPU s | server CPU s | other CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.get('format', 'records')} | {r['size']} | {r['clients']} | {r['requests']} | {r['errors']} | "
            f"{r['requests_per_s']:.0f} | {r['requests_per_s'] * r['size']:.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['client_cpu_s']:.1f} | "
            f"{r.get('server_cpu_s', float('nan')):.1f} | {r.get('other_cpu_s', float('nan')):.1f} |"
        )
    return "\n".join(lines)


def reload_summary(reload: dict[str, Any]) -> str:
    """The reload-under-load case in one paragraph."""
    r = reload["load"]
    return (
        f"Reload under load: {r['requests']} requests of {reload['size']} record(s) from {reload['clients']} clients "
        f"over {r['seconds']} s while the model was swapped every {reload['every_s']} s: {reload['swaps']} swaps "
        f"({reload['reload_failures']} failed reload calls), {r['errors']} failed requests {r['error_kinds'] or ''}, "
        f"answers by model id {r['models']}; p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms."
    )


def docs_section(report: dict[str, Any]) -> str:
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    text = [
        f"Measured {report['date']} by `{report['command']}`: {m['cores']} cores ({m['cpu']}), Python {m['python']}, "
        f"{versions}; {report['workers']} server worker(s), {report['engine']} engine, model `{report['model']}`; "
        f"load average {_loads(m['load_average_before'])} before, {_loads(m['load_average_after'])} after. "
        f"Offline, in the same run before the server started, the same model and engine on the server's "
        f"{report['threads']} thread(s) scored {report['offline_rows_per_s']['encoded']:,} encoded rows/s and "
        f"{report['offline_rows_per_s']['from_rows']:,} rows/s from the rows (encoding included), a reader's chunk at a time.",
        "",
        markdown(report["results"]),
    ]
    if report.get("reload"):
        text += ["", reload_summary(report["reload"])]
    return "\n".join(text)


def write_docs(path: Path, section: str) -> None:
    """Replace what is between the markers of ``path`` with ``section``."""
    begin, end = "<!-- loadtest:begin -->", "<!-- loadtest:end -->"
    page = path.read_text()
    if begin not in page or end not in page:
        raise SystemExit(f"{path}: no {begin} ... {end} lines to write the figures between")
    head, rest = page.split(begin, 1)
    path.write_text(f"{head}{begin}\n{section}\n{end}{rest.split(end, 1)[1]}")


def _loads(loads: list[float]) -> str:
    return "/".join(f"{x:.2f}" for x in loads)
