"""The LiteRT interpreter, from whichever runtime package this board has.

``ai-edge-litert`` is the maintained runtime (numpy 2, Python 3.12+); ``tflite-runtime`` 2.14 is
what older Pi images carry. The embedder's self-test catches a runtime that computes wrong answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class RuntimeMissing(RuntimeError):
    pass


def interpreter_class() -> tuple[type, str]:
    """The Interpreter class and the name of the package it came from."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime"
    except ImportError:
        raise RuntimeMissing(
            "no LiteRT runtime: pip install ai-edge-litert (or tflite-runtime on old boards)"
        ) from None


def load_interpreter(path: str | Path, num_threads: int | None = None) -> Any:
    """An allocated interpreter for ``path``; a clear ValueError for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    cls, _ = interpreter_class()
    try:
        interp = cls(model_path=str(path), num_threads=num_threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"cannot load model {path}: {str(e).splitlines()[0]}") from None
    return interp


def quantize_input(x: Any, detail: dict) -> Any:
    """Float input -> the tensor's dtype, applying its (scale, zero_point) when quantized."""
    import numpy as np

    dtype = detail["dtype"]
    if dtype == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / scale + zero), info.min, info.max).astype(dtype)


def dequantize_output(y: Any, detail: dict) -> Any:
    import numpy as np

    if y.dtype == np.float32:
        return y
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale
