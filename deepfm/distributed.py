"""deepfm 0.1's ``deepfm.distributed``, kept for one release: its names now live in deepfm.training.distributed."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.training.distributed")

from deepfm.training.distributed import (
    PREPARE_TIMEOUT,
    Context,
    all_gather_rows,
    broadcast_buffers,
    data_parallel,
    gather_array,
    gather_rows,
    global_batches,
    my_slice,
    setup,
    sum_scalar,
)

__all__ = [
    "Context",
    "PREPARE_TIMEOUT",
    "all_gather_rows",
    "broadcast_buffers",
    "data_parallel",
    "gather_array",
    "gather_rows",
    "global_batches",
    "my_slice",
    "setup",
    "sum_scalar",
]
