"""The LiteRT interpreter, from whichever runtime package this board has.

``ai-edge-litert`` is the maintained runtime (numpy 2, Python 3.12+); ``tflite-runtime`` 2.14 is
what older Pi images carry. The embedder's self-test catches a runtime that computes wrong answers.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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
        with native_notices_hidden():
            interp = cls(model_path=str(path), num_threads=num_threads)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"cannot load model {path}: {str(e).splitlines()[0]}") from None
    return interp


@contextmanager
def native_notices_hidden() -> Iterator[None]:
    """Drop the notices LiteRT's C++ runtime writes straight to file descriptor 2 while an
    interpreter is built ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU."): a user can
    act on none of them. Anything else written there meanwhile (its errors, another thread's log
    lines) is passed on afterwards. With DEBUG logging on, stderr is left alone."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep clean
        yield
        return
    with tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().splitlines(keepends=True)
                    if not line.startswith(b"INFO: ")]
            if kept:
                os.write(2, b"".join(kept))


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
