"""From files to a saved Bundle: preparing and caching the encoded data, the Trainer, the
job around it, data-parallel and sharded training, warm start, compare and tune."""
