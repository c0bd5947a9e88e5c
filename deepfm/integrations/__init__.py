"""Bridges to other tools' formats (each needs its tool installed; none is imported by ``import deepfm``)."""
