"""ONNX export and onnxruntime sessions for static subnets and single layers (exports, latency tables)."""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ..core.util import first_line

__all__ = ["ONNX_OPSET", "ONNX_OPSET_LEGACY", "ort_session", "quiet_export", "to_onnx"]

ONNX_OPSET = 18  # torch.export-based exporter
ONNX_OPSET_LEGACY = 17  # TorchScript-based exporter


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence the exporters' expected chatter (deprecations, tracer warnings, optional-op registry logs)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def to_onnx(module: nn.Module, inputs: Sequence[torch.Tensor], input_names: Sequence[str],
             output_names: Sequence[str], dynamic_batch: bool):
    """Export ``module(*inputs)`` (eval mode, no_grad) to ONNX; returns an ``onnx.ModelProto``.

    Uses torch's TorchScript-based exporter (opset 17) while torch ships it -- it is several times faster
    than the torch.export-based one for these small static networks -- and falls back to the
    torch.export-based exporter (opset 18, needs onnxscript) when it is unavailable or fails.
    """
    try:
        import onnx
    except ImportError:
        raise ValueError("export: ONNX needs the onnx package; pip install 'onceforall[onnx]'") from None
    try:
        return onnx.load_from_string(_onnx_legacy(module, inputs, input_names, output_names, dynamic_batch))
    except Exception as legacy_error:  # removed in a future torch, or an op it cannot convert
        try:
            import onnxscript  # noqa: F401
        except ImportError:
            raise ValueError(f"export: ONNX export failed ({first_line(legacy_error)}) and the torch.export-based "
                             "exporter needs onnxscript; pip install 'onceforall[onnx]'") from None
        try:
            return _onnx_dynamo(module, inputs, input_names, output_names, dynamic_batch)
        except Exception as e:
            raise ValueError(f"export: ONNX export failed: {first_line(legacy_error)} (TorchScript-based exporter); "
                             f"{first_line(e)} (torch.export-based exporter)") from e


def _onnx_legacy(module: nn.Module, inputs: Sequence[torch.Tensor], input_names: Sequence[str],
                 output_names: Sequence[str], dynamic_batch: bool) -> bytes:
    buf = io.BytesIO()
    axes = {name: {0: "batch"} for name in (*input_names, *output_names)} if dynamic_batch else None
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with quiet_export(), torch.no_grad():
        torch.onnx.export(module, tuple(inputs), buf, opset_version=ONNX_OPSET_LEGACY, input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=axes, **legacy)
    return buf.getvalue()


def _onnx_dynamo(module: nn.Module, inputs: Sequence[torch.Tensor], input_names: Sequence[str],
                 output_names: Sequence[str], dynamic_batch: bool):
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1)
        dynamic_shapes = tuple({0: batch} for _ in inputs)
    with quiet_export(), torch.no_grad():
        program = torch.onnx.export(module, tuple(inputs), dynamo=True, opset_version=ONNX_OPSET,
                                    input_names=list(input_names), output_names=list(output_names),
                                    dynamic_shapes=dynamic_shapes, verbose=False)
    return program.model_proto


def ort_session(model_bytes: bytes, threads: int, spinning: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if not spinning:  # many sessions alive at once: idle pools must not spin while another session runs
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
