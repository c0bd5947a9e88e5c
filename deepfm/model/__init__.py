"""The maths: layers, the DeepFM family, the row-wise optimizer and the probability
post-processing. No files and no training loop: the model knows no optimizer."""

from deepfm._deprecated import moved_names
from deepfm.model.deepfm import DeepFM, InputLayout

__all__ = ["DeepFM", "InputLayout"]

# deepfm 0.1's deepfm.model module held the model's config too.
__getattr__ = moved_names(
    __name__,
    {
        name: "deepfm.config"
        for name in (
            "DENSE_ROWS_PER_TABLE_ROW",
            "INIT_PAIRWISE_STD",
            "MODEL_KINDS",
            "ModelConfig",
            "auto_init_std",
            "rows_per_table_row",
        )
    },
)
