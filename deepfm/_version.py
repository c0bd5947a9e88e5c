"""The version of deepfm: pyproject.toml reads it from here, ``deepfm --version`` prints it and
every saved bundle records it (manifest.json's ``deepfm_version``). CHANGELOG.md says what
changed between versions."""

__version__ = "0.2.0.dev0"
