"""Checks for typed configs, made once where a config enters (YAML, flags, JSON)."""

from __future__ import annotations

from typing import Any, Literal

from deepfm.errors import ConfigError

# A setting resolved from the data when training starts (batch size, init_std, min_count, ...):
# typed so that mypy catches a misspelt "auto" where a setting is given in code.
Auto = Literal["auto"]


def check_keys(where: str, data: dict[str, Any], allowed: set[str]) -> None:
    """Refuse keys a config section does not know, listing the ones it does."""
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def coerce_numbers(obj: Any, where: str, floats: tuple[str, ...] = (), ints: tuple[str, ...] = ()) -> None:
    """Turn a frozen dataclass's numeric options into float/int once, at the edge: YAML reads
    ``1e-3`` as a string, and a string must not reach the optimizer."""
    for names, kind in ((floats, float), (ints, int)):
        for name in names:
            value = getattr(obj, name)
            if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
                raise ConfigError(
                    f"{where}.{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
                )
            try:
                object.__setattr__(obj, name, kind(float(value)) if kind is int else float(value))
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{where}.{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
                ) from None
