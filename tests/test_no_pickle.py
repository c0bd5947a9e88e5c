"""Nothing executed: no code path of deepfm unpickles, calls torch.load without
weights_only=True, loads NumPy pickles, unsafe YAML, or evaluates strings. Checked two ways:
statically over every module, and at run time with the loaders replaced by traps while a
model is trained, checkpointed, saved, loaded and used."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import deepfm
from deepfm.bundle import Bundle
from deepfm.training import train
from deepfm.training.checkpoint import CHECKPOINT, load_checkpoint

from helpers import (
    assert_identical_scores,
    simple_records,
    simple_schema,
    small_config,
    write_records_csv,
)

PACKAGE = Path(deepfm.__file__).parent


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """(dotted name, call) for every call whose function is a name or attribute chain."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                parts.append(f.id)
                out.append((".".join(reversed(parts)), node))
    return out


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_no_module_can_load_code() -> None:
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for name in [*names, module]:
                if name and name.split(".")[0] in (
                    "pickle",
                    "cPickle",
                    "dill",
                    "cloudpickle",
                    "joblib",
                    "marshal",
                    "shelve",
                ):
                    offences.append(f"{path.name}:{node.lineno} imports {name}")
        for name, call in _calls(tree):
            where = f"{path.name}:{call.lineno} {name}"
            if name in ("eval", "exec", "compile", "__import__"):
                offences.append(where)
            if name.endswith("torch.load"):
                if _keyword(call, "weights_only") is not True:
                    offences.append(f"{where} without weights_only=True")
            if name in ("np.load", "numpy.load") and _keyword(call, "allow_pickle") is True:
                offences.append(f"{where} with allow_pickle=True")
            if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
                offences.append(f"{where}: use yaml.safe_load")
    assert not offences, "code that can execute what it loads:\n" + "\n".join(offences)


def test_the_scan_catches_what_it_looks_for() -> None:
    bad = "import pickle\nx = torch.load(f)\ny = np.load(f, allow_pickle=True)\neval('1')\nyaml.load(s)\n"
    tree = ast.parse(bad)
    names = [name for name, _ in _calls(tree)]
    assert names == ["torch.load", "np.load", "eval", "yaml.load"]
    assert _keyword(_calls(tree)[1][1], "allow_pickle") is True


def test_every_load_path_runs_with_the_unpicklers_trapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def trap(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unpickling loader was called")

    real_np_load = np.load
    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, trap)
    monkeypatch.setattr(np, "load", lambda *a, **k: trap() if k.get("allow_pickle") else real_np_load(*a, **k))

    records = simple_records(1500, seed=4)
    data = write_records_csv(tmp_path / "d.csv", records)
    out = tmp_path / "m"
    # A checkpoint is written mid-run; keep one by stopping the run after its first epoch.
    with pytest.raises(RuntimeError, match="stop"):
        train(
            small_config(simple_schema(), epochs=2, checkpoint_every=3),
            data,
            out,
            split="0.8,0.2",
            on_epoch=lambda row: (_ for _ in ()).throw(RuntimeError("stop")),
        )
    tensors, state = load_checkpoint(out / CHECKPOINT)
    assert tensors and state["progress"]["steps"] > 0
    from deepfm.training import resume

    bundle = resume(out)
    loaded = Bundle.load(out)
    fields = ("user", "item", "price", "tags")
    p = loaded.predict([{k: r[k] for k in fields} for r in records[:50]])
    assert_identical_scores(
        p, bundle.predict([{k: r[k] for k in fields} for r in records[:50]]), "saved and loaded weights, same batch"
    )
