"""deepfm 0.1's ``deepfm.sharded``, kept for one release: its names now live in deepfm.training.sharded."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.training.sharded")

from deepfm.training.sharded import (
    INSTALL_HINT,
    FieldTable,
    ShardedDeepFM,
    ShardedFieldEmbedding,
    field_tables,
    plan_tables,
    rank_batches,
    require_torchrec,
)

__all__ = [
    "FieldTable",
    "INSTALL_HINT",
    "ShardedDeepFM",
    "ShardedFieldEmbedding",
    "field_tables",
    "plan_tables",
    "rank_batches",
    "require_torchrec",
]
