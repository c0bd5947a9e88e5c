"""Helpers every layer may use: files (atomic writes, digests), maths on arrays, metrics.

Nothing here imports the rest of deepfm.
"""
