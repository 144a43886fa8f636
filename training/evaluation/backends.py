"""Backends: aligned crops -> embeddings. A ``training.models`` architecture with a checkpoint
(torch imported only then) or an exported ``.tflite`` run exactly as the device runs it.
Peers (``benchmarks/peers.py``) subclass ``Backend``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeface_cam.align import align_face
from edgeface_cam.detect import Face
from edgeface_cam.embed import file_sha256, l2_normalize

from ..common import torch_embed
from . import EvalError


class Backend:
    """Aligned crops -> embeddings. Peers (``benchmarks/peers.py``) override ``align`` too."""

    name = "backend"
    metric = "cosine"  # or "euclidean": scores are then -distance
    worst_score = -1.0  # given to pairs with a missing face: below every real score

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        return align_face(image, face.landmarks, face.landmark_names)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) BGR uint8 crops -> (N, D) float32 raw embeddings."""
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What makes two runs' embeddings interchangeable (for the cache and the report)."""
        return {"name": self.name}


class TorchBackend(Backend):
    """A ``training.models`` architecture with a checkpoint; torch imported only here."""

    def __init__(self, arch: str, checkpoint: str | Path | None, threads: int = 1,
                 batch: int = 32) -> None:
        import torch

        from ..models import load_model

        torch.set_num_threads(max(1, threads))
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise EvalError(f"no such checkpoint: {checkpoint}")
        self.model = load_model(arch, checkpoint)
        self.name = arch
        self.batch = batch
        self.checkpoint = str(checkpoint) if checkpoint else None
        self.sha256 = file_sha256(checkpoint) if checkpoint else None

    def embed(self, crops: np.ndarray) -> np.ndarray:
        return torch_embed(self.model, crops, self.batch)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "runtime": "torch", "checkpoint": self.checkpoint,
                "sha256": self.sha256}


class LiteRTBackend(Backend):
    """An exported ``.tflite`` through the device's own Embedder (card, self-test, quantization)."""

    def __init__(self, model: str | Path, threads: int = 1) -> None:
        from edgeface_cam.embed import Embedder

        if not Path(model).is_file():
            raise EvalError(f"no such model: {model}")
        self.embedder = Embedder(model, num_threads=threads, self_test=True)
        self.name = self.embedder.name
        self.model = str(model)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        return self.embedder.embed(crops)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "runtime": self.embedder.runtime, "model": self.model,
                "sha256": self.embedder.fingerprint,
                "quantization": self.embedder.card.raw.get("quantization")}


def combine(backend: Backend, e: np.ndarray, e_flip: np.ndarray | None) -> np.ndarray:
    """One image's embedding from the crop's and (optionally) its flip's."""
    if backend.metric == "cosine":
        return (l2_normalize(l2_normalize(e) + l2_normalize(e_flip)) if e_flip is not None
                else l2_normalize(e))
    return (e + e_flip) / 2 if e_flip is not None else e

