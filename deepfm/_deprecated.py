"""The module paths of deepfm 0.1's flat layout, kept as aliases for one release.

Each old module (``deepfm/train.py``, ``deepfm/predict.py``, ...) is a thin alias that warns
once when imported and re-exports the public names from their new homes; the packages that
took an old module's name (``deepfm.features``, ``deepfm.model``, ``deepfm.cli``) answer for
the names that moved elsewhere through :func:`moved_names`. CHANGELOG.md lists them all.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any

REMOVED_IN = "0.3"


def warn_moved(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` (a module or a name) is now found in ``new``."""
    warnings.warn(
        f"{old} is deprecated: import from {new} instead (the old path goes in deepfm {REMOVED_IN})",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def deprecated_module(old: str, new: str) -> None:
    """Called by an alias module when it is imported: warns once, naming the new home."""
    # stacklevel 4: past this function, the alias module and importlib's frame, to the import.
    warn_moved(old, new, stacklevel=4)


def moved_names(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that finds each name of ``homes`` (name ->
    module) in its new module, with a DeprecationWarning."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        warn_moved(f"{package}.{name}", homes[name])
        return getattr(importlib.import_module(homes[name]), name)

    return __getattr__
