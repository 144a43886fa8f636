"""The embedder: an exported EdgeFace ``.tflite`` run by LiteRT, verified at load by its card.

The model card (``<model>.json`` beside the ``.tflite``) is the contract with ``training.export``:
input layout, normalisation, quantization and a self-test vector. The device reads it, never
guesses.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .align import CROP_SIZE, normalize
from .config import RecognizerConfig, resolve_asset
from .runtime import dequantize_output, interpreter_class, load_interpreter, quantize_input

# The config's one definition of recognizer.model / threads (the bundled XS, 2 threads).
DEFAULT_MODEL = resolve_asset(RecognizerConfig().model)
DEFAULT_THREADS = RecognizerConfig().threads


class SelfTestFailed(RuntimeError):
    """The runtime computed a different embedding from the one recorded at export."""


class ModelMismatch(ValueError):
    """The card beside a model describes another file (another export, or a damaged copy)."""


_SAME_EXPORT = "copy the .tflite and its .json from the same export"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ModelCard:
    """What the device needs from ``<model>.json``; the full card is kept in ``raw``."""

    raw: dict[str, Any]
    path: Path

    @classmethod
    def for_model(cls, model: str | Path) -> ModelCard:
        path = Path(model).with_suffix(".json")
        if not path.is_file():
            raise FileNotFoundError(f"model card not found: {path} (export writes it beside the"
                                    " .tflite; see README 'Models')")
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"model card {path} is not valid JSON: {e}") from None
        for key in ("arch", "input", "embedding_size"):
            if key not in raw:
                raise ValueError(f"model card {path} lacks the key {key!r}")
        return cls(raw, path)

    def file_problem(self, model: str | Path, sha256: str) -> str | None:
        """Why this card does not describe ``model`` (whose sha256 is given), or None. A card
        without a recorded sha256 (hand-made) is checked only by ``shape_problem``."""
        want = self.raw.get("sha256")
        if not want or want == sha256:
            return None
        model = Path(model)
        described = self.raw.get("file") or "another file"
        size = self.raw.get("size_bytes")
        of_size = f", {int(size) / 1e6:.1f} MB" if isinstance(size, int) else ""
        return (f"model and card do not match: {self.path.name} describes {described} "
                f"(sha256 {want[:12]}{of_size}), but {model.name} is sha256 {sha256[:12]} "
                f"({model.stat().st_size / 1e6:.1f} MB): another model's card or a damaged "
                f"copy; {_SAME_EXPORT}")

    def shape_problem(self, input_shape: Any, output_shape: Any) -> str | None:
        """Why a model taking ``input_shape`` and giving ``output_shape`` is not the one this
        card describes, or None."""
        want_in = self.raw["input"].get("shape")
        got_in = [int(v) for v in input_shape]
        got_out = int(np.prod(output_shape))
        if want_in is not None and [int(v) for v in want_in] != got_in:
            return (f"model and card do not match: {self.path.name} says input {list(want_in)}, "
                    f"the model takes {got_in}; {_SAME_EXPORT}")
        if got_out != self.embedding_size:
            return (f"model and card do not match: {self.path.name} says {self.embedding_size}"
                    f"-d embeddings, the model gives {got_out} values; {_SAME_EXPORT}")
        return None

    @property
    def layout(self) -> str:
        return self.raw["input"].get("layout", "NHWC")

    @property
    def embedding_size(self) -> int:
        return int(self.raw["embedding_size"])

    @property
    def calibration(self) -> dict[str, Any] | None:
        """The impostor-score calibration (``training.calibrate``) the auto threshold is
        derived from (``edgeface_cam.threshold``), or None for a card without one."""
        cal = self.raw.get("calibration")
        return cal if isinstance(cal, dict) else None

    def self_test(self) -> tuple[np.ndarray, np.ndarray, float] | None:
        """(aligned BGR crop, expected embedding, minimum cosine) or None if the card has none."""
        st = self.raw.get("self_test")
        if not st:
            return None
        png = base64.b64decode(st["image_png_base64"])
        crop = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        expected = np.asarray(st["embedding"], dtype=np.float32)
        return crop, expected, float(st.get("min_cosine", 0.99))


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class Embedder:
    """Aligned 112x112 BGR crops -> L2-normalised embeddings (float32, ``embedding_size``)."""

    def __init__(self, model: str | Path = DEFAULT_MODEL,
                 num_threads: int | None = DEFAULT_THREADS,
                 self_test: bool = True) -> None:
        self.model_path = Path(model)
        self.card = ModelCard.for_model(self.model_path)
        self.fingerprint = file_sha256(self.model_path)
        # Loaded first: a file LiteRT cannot read at all is "cannot load", not a mismatch.
        self._interp = load_interpreter(self.model_path, num_threads)
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        problem = (self.card.file_problem(self.model_path, self.fingerprint)
                   or self.card.shape_problem(self._in["shape"], self._out["shape"]))
        if problem:
            raise ModelMismatch(problem)
        self.runtime = interpreter_class()[1]
        if self_test:
            self.check()

    @property
    def name(self) -> str:
        return str(self.card.raw.get("name", self.model_path.stem))

    def check(self) -> float:
        """Run the card's self-test vector; raise SelfTestFailed on a wrong runtime."""
        test = self.card.self_test()
        if test is None:
            return float("nan")
        crop, expected, min_cos = test
        got = self.embed_one(crop)
        cos = float(got @ l2_normalize(expected))
        if not cos >= min_cos:
            raise SelfTestFailed(
                f"runtime {self.runtime} gives a wrong embedding for {self.model_path.name} "
                f"(self-test cosine {cos:.4f} < {min_cos}); install ai-edge-litert "
                "(tflite-runtime 2.14 is known to miscompute newer int8 models)")
        return cos

    def embed_one(self, crop_bgr: np.ndarray) -> np.ndarray:
        if crop_bgr.shape[:2] != (CROP_SIZE, CROP_SIZE):
            raise ValueError(f"expected an aligned {CROP_SIZE}x{CROP_SIZE} crop, "
                             f"got {crop_bgr.shape}")
        x = quantize_input(normalize(crop_bgr, self.card.layout), self._in)
        self._interp.set_tensor(self._in["index"], x)
        self._interp.invoke()
        y = dequantize_output(self._interp.get_tensor(self._out["index"]), self._out)
        return l2_normalize(y.reshape(-1))

    def embed(self, crops_bgr: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Embed a batch of crops; (N, D) float32, each row unit length."""
        if len(crops_bgr) == 0:
            return np.zeros((0, self.card.embedding_size), np.float32)
        return np.stack([self.embed_one(c) for c in crops_bgr])
