"""Where one training step's time goes, and what the FP32 roofline says is left.

    python benchmarks/profile_step.py --rows 300000

Generates Criteo-layout data with ``deepfm synth`` (cached in --workdir), encodes it, then
profiles training steps of the benchmark model (embedding 10, MLP 400-400-400, batch 4096,
dropout 0) with torch.profiler, grouped by the labels the trainer puts on each stage. The
machine's FP32 matrix-multiply peak is measured in the same run, so the roofline is this
machine's, not a datasheet's. Prints Markdown and writes JSON next to this file.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from deepfm.config import ModelConfig, RunConfig, TrainConfig
from deepfm.data.encoded import Batch
from deepfm.data.schema import criteo_schema
from deepfm.model.deepfm import DeepFM, InputLayout
from deepfm.training import Trainer, default_cache_dir, prepare_cached

LABELS = ["data", "embedding lookup", "fm", "mlp", "loss", "backward", "dense optimizer", "embedding optimizer"]


def matmul_peak(seconds: float = 2.0) -> float:
    """FP32 GFLOP/s of a large square-ish matrix multiply, the best this CPU does."""
    a, b = torch.randn(4096, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * 4096 * 1024 * 1024 * n / (time.perf_counter() - t0) / 1e9


def mlp_flops_per_sample(in_dim: int, hidden: list[int]) -> float:
    """Forward + backward FLOPs of the MLP's matrix multiplies for one sample (3 x forward:
    forward, gradient of the input, gradient of the weights)."""
    dims = [in_dim, *hidden, 1]
    return 3 * sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/deepfm-bench"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    return ap.parse_args()


def build(args: argparse.Namespace) -> tuple[Callable[[], None], InputLayout, ModelConfig]:
    """Generated data, encoded and cached; the speed benchmark's DeepFM and its trainer.
    Returns one training step as a function, the input layout and the model's settings."""
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / f"synth-{args.rows}.tsv"
    if not data.exists():
        subprocess.run(
            [sys.executable, "-m", "deepfm", "synth", "--rows", str(args.rows), "--out", str(data), "--quiet"],
            check=True,
        )
    config = RunConfig(schema=criteo_schema())
    pipeline, parts, _ = prepare_cached(config, data, default_cache_dir(), split=(0.8, 0.1, 0.1))
    layout = InputLayout(pipeline.num_embeddings, len(pipeline.single_fields))
    # resolved without the training rows: init_std as for sparse data, which moves no timing
    model_cfg = ModelConfig(embedding_dim=10, hidden=(400, 400, 400), dropout=0.0, batch_norm=False).resolved(layout)
    torch.manual_seed(0)
    model = DeepFM(layout, model_cfg)
    # the speed benchmark's fixed steps; the "auto" ones resolve from the data in a real run
    train_cfg = replace(TrainConfig(), batch_size=args.batch_size, embedding_lr=1e-3, l2_embedding=1e-5, progress=False)
    trainer = Trainer(model, train_cfg, torch.device("cpu"))

    def forever() -> Iterator[Batch]:  # epochs back to back, so any --steps fits
        epoch = 0
        while True:
            yield from parts.train.batches(args.batch_size, shuffle=True, seed=epoch, drop_last=True)
            epoch += 1

    batches = forever()

    def step() -> None:
        with torch.profiler.record_function("data"):
            batch = next(batches)
        trainer.step(batch, len(batch))

    return step, layout, model_cfg


def time_steps(step: Callable[[], None], steps: int) -> tuple[float, dict[str, float]]:
    """Seconds per step unprofiled (after 5 warm-up steps), then each labelled range's
    milliseconds per step under the profiler."""
    for _ in range(5):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    step_s = (time.perf_counter() - t0) / steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    # Wall time of each labelled range, averaged per step.
    by_label = {k: 0.0 for k in LABELS}
    for evt in prof.events():
        if evt.name in by_label:
            by_label[evt.name] += evt.cpu_time_total / 1e3 / steps  # us -> ms
    return step_s, by_label


def main() -> None:
    args = parse_args()
    step, layout, model_cfg = build(args)
    step_s, by_label = time_steps(step, args.steps)
    profiled_total = sum(by_label.values())
    peak = matmul_peak()
    flops = mlp_flops_per_sample(layout.n_fields * model_cfg.embedding_dim, list(model_cfg.hidden))
    samples_s = args.batch_size / step_s
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "step_ms": step_s * 1e3,
        "train_samples_per_s": samples_s,
        "ms_per_step": by_label,
        "other_ms": max(step_s * 1e3 - profiled_total, 0.0),
        "matmul_peak_gflops": peak,
        "mlp_flops_per_sample": flops,
        "roofline_samples_per_s": peak * 1e9 / flops,
    }
    print("| stage | ms per step | share |\n|---|---:|---:|")
    for k, v in by_label.items():
        print(f"| {k} | {v:.1f} | {100 * v / (step_s * 1e3):.0f}% |")
    print(f"| step (unprofiled) | {step_s * 1e3:.1f} | 100% |")
    print(
        f"\n{samples_s:,.0f} samples/s; MLP needs {flops / 1e6:.2f} MFLOP per sample; measured FP32 matmul peak "
        f"{peak:.0f} GFLOP/s -> roofline {result['roofline_samples_per_s']:,.0f} samples/s "
        f"({100 * samples_s / result['roofline_samples_per_s']:.0f}% of it)."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"profile-{result['date']}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
