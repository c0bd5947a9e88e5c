"""From a saved Bundle to probabilities: the Predictor, scoring files, ONNX export and the
HTTP service."""
