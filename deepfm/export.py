"""deepfm 0.1's ``deepfm.export``, kept for one release: its names now live in deepfm.inference.export."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.inference.export")

from deepfm.inference.export import (
    ENCODING,
    OnnxEngine,
    check_onnx,
    export_onnx,
    graph_inputs,
    input_names,
    random_encoded,
)

__all__ = ["ENCODING", "OnnxEngine", "check_onnx", "export_onnx", "graph_inputs", "input_names", "random_encoded"]
