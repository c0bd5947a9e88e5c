"""The errors deepfm raises on bad input. The CLI prints their message, not a traceback."""

from __future__ import annotations


class DeepFMError(Exception):
    """Base class of every error caused by what a user gave us."""


class ConfigError(DeepFMError, ValueError):
    """A config, schema or command-line option is wrong."""


class DataError(DeepFMError, ValueError):
    """An input file is malformed. The message names the file, line and field."""

    def __init__(
        self,
        message: str,
        path: str | None = None,
        line: int | str | None = None,
        field: str | None = None,
    ) -> None:
        """``line`` is a 1-based line number, or a location such as ``"row 12"`` (Parquet)."""
        self.path, self.line, self.field, self.detail = path, line, field, message
        where = []
        if path is not None:
            where.append(str(path))
        if isinstance(line, int):
            where.append(f"line {line}")
        elif line is not None:
            where.append(line)
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class TrainingError(DeepFMError):
    """Training cannot go on (the loss became NaN or infinite)."""


class BundleError(DeepFMError):
    """A saved model folder is missing files or does not match what is expected."""


class MissingExtra(DeepFMError):
    """An optional group of dependencies (a pip extra) is not installed."""


def require_extra(extra: str, *modules: str) -> None:
    """Import ``modules`` or fail with the pip command that installs them."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise MissingExtra(f"{name} is not installed ({exc}); pip install 'deepfm[{extra}]'") from None
