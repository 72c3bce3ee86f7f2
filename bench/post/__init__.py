"""After training: a trained model quantised, pruned and exported (compress, onnx_export), each form's
size, accuracy and CPU latency measured like with like (latency); command is `python -m bench.post`."""
