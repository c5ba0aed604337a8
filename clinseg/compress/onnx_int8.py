"""INT8 through ONNX Runtime: the modern comparison to the thesis's 31-level scheme.

The float network is exported to ONNX, then statically quantised by ONNX Runtime's tooling (QDQ format,
per-channel symmetric INT8 weights, UINT8 activations calibrated by min/max on a few real inputs), so that
ONNX Runtime runs the convolutions as integer kernels. Optional: needs ``onnx`` and ``onnxruntime``
(``pip install clinseg[onnx]``); the rest of ``clinseg`` never imports them.
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..io.atomic import atomic_write

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def require_onnxruntime() -> None:
    """Refuse with one line when the optional packages are missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise InputError("onnxruntime", "not installed: pip install 'clinseg[onnx]' (onnx, onnxruntime)") from None


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Write ``model`` (eval mode, plain weights) to ``path`` as ONNX, batch and spatial sizes dynamic."""
    require_onnxruntime()
    model = model.eval()
    axes = {0: "n", 2: "d", 3: "h", 4: "w"}
    with atomic_write(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on the input-shape check are expected
        # The TorchScript exporter: it needs no onnxscript and handles these plain convolution graphs.
        torch.onnx.export(model, (example,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes}, opset_version=17, dynamo=False)
    return Path(path)


def quantise_int8(float_onnx: str | Path, path: str | Path, calibration: Iterable[np.ndarray]) -> Path:
    """Static INT8 (QDQ, per-channel weights) of ``float_onnx`` written to ``path``; ``calibration`` holds
    (1, C, D, H, W) inputs of the size the model will see."""
    require_onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    items = iter([{INPUT_NAME: np.ascontiguousarray(s, dtype=np.float32)} for s in calibration])

    class Reader(CalibrationDataReader):  # ONNX Runtime's protocol: one input dict per call, None at the end
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(items, None)

    with tempfile.TemporaryDirectory() as tmpdir, atomic_write(path) as tmp:
        prepared = Path(tmpdir) / "prepared.onnx"
        # Symbolic shape inference gives up on the dynamic spatial axes; ONNX's own inference is enough here.
        quant_pre_process(str(float_onnx), str(prepared), skip_symbolic_shape=True)
        with contextlib.redirect_stdout(None):
            quantize_static(str(prepared), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    return Path(path)


class OnnxModel:
    """An ONNX Runtime CPU session that maps (N, C, D, H, W) float arrays to logits, ``threads`` intra-op."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        require_onnxruntime()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False  # the arena keeps its high-water mark: peak memory would read high
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(image, dtype=np.float32)})[0]
