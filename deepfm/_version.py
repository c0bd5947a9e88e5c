"""The version of deepfm: pyproject.toml reads it from here, bundles record it."""

__version__ = "0.1.0"
