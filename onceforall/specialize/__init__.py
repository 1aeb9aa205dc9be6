"""Specializing trained supernets without a run directory: the accuracy predictor and evolutionary search,
deployable subnet files (safetensors + sidecar, ONNX, TorchScript), latency lookup tables and timing."""
