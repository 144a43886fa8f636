"""Export an EdgeFace checkpoint to a LiteRT ``.tflite`` plus its model card.

    python -m training.export --arch edgeface_xs_q --checkpoint ../shared/models/edgeface_xs_q.pt \
        --out assets/edgeface_xs.tflite --quantize dynamic-int8 --heldout /tmp/cache/celeba-subset

Conversion is litert-torch (torch -> float .tflite); quantization is ai-edge-quantizer on that
float file (one tool for every mode, and its static recipe keeps int8 accurate where litert-torch's
own PT2E path does not). The .tflite takes NHWC float input normalised by ``align.normalize``
(the permute to NCHW is inside the model) and returns the raw 512-d embedding.
The card (``<out>.json``) is the contract ``edgeface_cam.embed`` reads; see docs/models.md.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np

from edgeface_cam.align import CROP_SIZE, EMBEDDING_SIZE, normalize
from edgeface_cam.embed import file_sha256
from training.common import DEFAULT_MIN_FACE, MainFace, cosines, open_detector, torch_embed
from training.prepare import list_images

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGEFACE_SHARED", ROOT.parent / "shared"))
# MIT-licensed fixture (ageitgey/face_recognition): the card embeds its aligned crop as a PNG.
SELF_TEST_IMAGE = SHARED / "fixtures" / "people" / "obama" / "obama_1.jpg"
SELF_TEST_FALLBACK_CARD = ROOT / "assets" / "edgeface_xs.json"
QUANTIZE_MODES = ("none", "fp16", "dynamic-int8", "int8", "int16x8")
CALIBRATED_MODES = ("int8", "int16x8")
# Calibrated activation ranges are widened by this factor for int16x8: faces outside the
# calibration set otherwise clip (EdgeFace-XXS, 100 calibration / 200 held-out faces: min cosine
# 0.951 at 1x, 0.991 at 1.5x, 0.997 at 2x, 0.996 at 4x). With 16 bits the lost bit is cheap;
# with 8 bits any factor only hurts (0.3x..4x all measured worse than 1x), so int8 keeps 1x.
INT16_RANGE_MARGIN = 2.0

# The authors' published checkpoints (sha256) -> the terms their weights come with.
AUTHORS_CHECKPOINTS = {
    "a31314377876ab9f": "edgeface_xs_q.pt",
    "46be7cc7e8d6e235": "edgeface_xxs_q.pt",
}
AUTHORS_LICENSE = {
    "weights": "CC BY-NC-SA 4.0 (non-commercial, attribution, share-alike), as stated on the "
               "authors' model-hub card",
    "code": "BSD-3-Clause (the authors' EdgeFace repository and this project)",
}
AUTHORS_ATTRIBUTION = (
    "EdgeFace by Anjith George, Christophe Ecabert, Hatef Otroshi Shahreza, Ketan Kotwal and "
    "Sebastien Marcel (Idiap Research Institute), 'EdgeFace: Efficient Face Recognition Model "
    "for Edge Devices', IEEE T-BIOM 2024, arXiv:2307.01838"
)
AUTHORS_TRAINING_DATA = (
    "the authors' training (WebFace4M / WebFace12M per the official configs); not retrained here"
)


class ExportError(RuntimeError):
    """A user mistake or a failed step, reported as one line and exit status 2."""


# ---------------------------------------------------------------------------------------------
# Small helpers


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def load_crops(folder: str | Path, limit: int | None = None, what: str = "crops") -> np.ndarray:
    """Aligned 112x112 BGR crops from a folder (e.g. written by ``training.prepare``).

    ``limit`` takes an even spread over the sorted files, so a cap still samples every identity.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{what} folder not found: {folder}")
    files = list_images(folder)
    if not files:
        raise ExportError(f"no images in {what} folder {folder} (make aligned crops with "
                          "python -m training.prepare)")
    if limit and len(files) > limit:
        idx = np.linspace(0, len(files) - 1, limit).round().astype(int)
        files = [files[i] for i in sorted(set(idx))]
    crops = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise ExportError(f"cannot read image {f}")
        if img.shape[:2] != (CROP_SIZE, CROP_SIZE):
            raise ExportError(f"{f} is {img.shape[1]}x{img.shape[0]}, not an aligned "
                              f"{CROP_SIZE}x{CROP_SIZE} crop (run python -m training.prepare)")
        crops.append(img)
    return np.stack(crops)


def aligned_face(path: str | Path) -> np.ndarray:
    """An aligned crop from a photo: the device path (YuNet, largest face, align_face).

    An image that already is 112x112 is taken as an aligned crop.
    """
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ExportError(f"cannot read image {path}")
    if img.shape[:2] == (CROP_SIZE, CROP_SIZE):
        return img
    crop = MainFace(open_detector(), min_face=DEFAULT_MIN_FACE).crop(img)
    if crop is None:
        raise ExportError(f"no face found in {path}")
    return crop


def self_test_crop(image: str | Path | None = None) -> tuple[np.ndarray, str]:
    """The self-test crop and where it came from."""
    if image is not None:
        return aligned_face(image), str(image)
    if SELF_TEST_IMAGE.is_file():
        return aligned_face(SELF_TEST_IMAGE), "fixtures/people/obama/obama_1.jpg (MIT)"
    if SELF_TEST_FALLBACK_CARD.is_file():
        card = json.loads(SELF_TEST_FALLBACK_CARD.read_text())
        png = base64.b64decode(card["self_test"]["image_png_base64"])
        crop = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        return crop, f"the self-test crop of {SELF_TEST_FALLBACK_CARD.name}"
    raise ExportError("no self-test image: pass --self-test-image PHOTO")


def png_base64(crop_bgr: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", crop_bgr)
    if not ok:
        raise ExportError("cannot encode the self-test crop as PNG")
    return base64.b64encode(buf.tobytes()).decode("ascii")


# ---------------------------------------------------------------------------------------------
# Torch side


def build_torch_model(arch: str, checkpoint: str | Path):
    """(float model to export, torch reference models {label: model}, note).

    A ``_q`` name (the authors' dynamic-int8 files) exports its dequantised float twin; the int8
    torch model is kept as a second reference so parity to what the authors ship is measured too.
    """
    import torch

    from training.models import MODELS, dequantize, load_model

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    refs = {}
    note = ""
    base = arch.removesuffix("_float")
    if base in MODELS and MODELS[base].quantized:
        qmodel = load_model(base, checkpoint)
        model = dequantize(qmodel, base + "_float")
        refs["torch_q"] = qmodel
        note = (f"{base} is PyTorch dynamic int8, which LiteRT cannot take: exporting its "
                f"dequantised float twin {base}_float (weights exactly (q - zero) * scale)")
    else:
        model = load_model(arch, checkpoint)
    refs = {"torch_float": model, **refs}
    return model, refs, note


def nhwc_wrapper(model):
    """The exported graph: NHWC float input, permuted to the NCHW the network wants."""
    import torch

    class NHWC(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x.permute(0, 3, 1, 2))

    return NHWC(model).eval()


def flatten_linears(model):
    """Make every nn.Linear see a 2-D input (N*H*W, C), in place.

    EdgeNeXt applies its MLP linears to NHWC maps; litert-torch then emits FULLY_CONNECTED ops
    with a 4-D bias (1, 1, 1, C), which ai-edge-quantizer's static int8 quantizes per-channel
    along a size-1 axis, giving a file LiteRT refuses to load. Same arithmetic, 1-D bias.
    """
    import torch

    class Linear2D(torch.nn.Module):
        def __init__(self, linear: torch.nn.Linear) -> None:
            super().__init__()
            self.linear = linear

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shape = x.shape
            y = self.linear(x.reshape(-1, shape[-1]))
            return y.reshape(*shape[:-1], self.linear.out_features)

    for name, child in model.named_children():
        if isinstance(child, torch.nn.Linear):
            setattr(model, name, Linear2D(child))
        else:
            flatten_linears(child)
    return model


def convert_float(model, out_path: Path) -> None:
    """torch -> float32 .tflite (litert-torch): positional encoding frozen at 112, linears 2-D."""
    import copy

    import torch

    from training.models import freeze_positional_encoding

    try:
        import litert_torch
    except ImportError:
        raise ExportError("litert-torch is not installed: pip install -e '.[export]'") from None
    frozen = flatten_linears(freeze_positional_encoding(copy.deepcopy(model), CROP_SIZE))
    sample = (torch.zeros(1, CROP_SIZE, CROP_SIZE, 3),)
    edge = litert_torch.convert(nhwc_wrapper(frozen), sample)
    edge.export(str(out_path))


# ---------------------------------------------------------------------------------------------
# Quantization (ai-edge-quantizer on the float .tflite)


def recipe_for(mode: str):
    """The ai-edge-quantizer recipe for a mode, and a one-line description for the card.

    Measured on EdgeFace-XS (celeba-subset faces, cosine to the torch float model): int8 weights
    with run-time int8 activations on every op lose accuracy (0.980; the depthwise convs suffer),
    on FULLY_CONNECTED only 0.9986 -- the same layers the authors' _q files quantize. Static int8
    activations lose far more (about 0.76-0.86 whatever the op set or calibrator): the card and
    docs/models.md carry the figure; it is offered for integer-only accelerators, not shipped.
    int16x8 (TFLite's "16x8" scheme: int8 weights, int16 activations) on the same ops keeps the
    outlier channels of EdgeNeXt's MLPs representable: cosine 0.998, but LiteRT runs 16x8 with
    reference kernels (about 10x slower than float on a CPU), so it is for NPUs that take 16x8.
    """
    from ai_edge_quantizer import algorithm_manager, qtyping, recipe_manager

    op = qtyping.TFLOperationName
    rm = recipe_manager.RecipeManager()
    if mode == "dynamic-int8":
        rm.add_dynamic_config(".*", op.FULLY_CONNECTED, 8)
        desc = ("ai-edge-quantizer dynamic int8 on FULLY_CONNECTED ops (channel-wise int8 "
                "weights, activations quantized at run time); convolutions stay float32")
    elif mode == "int8":
        for o in (op.FULLY_CONNECTED, op.CONV_2D, op.DEPTHWISE_CONV_2D):
            rm.add_static_config(".*", o, activation_num_bits=8, weight_num_bits=8)
        desc = ("ai-edge-quantizer static int8 (weights and calibrated min/max activations) on "
                "FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D; float input/output")
    elif mode == "int16x8":
        for o in (op.FULLY_CONNECTED, op.CONV_2D, op.DEPTHWISE_CONV_2D):
            rm.add_static_config(".*", o, activation_num_bits=16, weight_num_bits=8)
        desc = ("ai-edge-quantizer static 16x8 (channel-wise int8 weights, int16 activations "
                f"from calibrated min/max widened {INT16_RANGE_MARGIN:g}x) on FULLY_CONNECTED / "
                "CONV_2D / DEPTHWISE_CONV_2D; float input/output")
    elif mode == "fp16":
        rm.add_weight_only_config(".*", op.ALL_SUPPORTED, 16,
                                  algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
        desc = "ai-edge-quantizer float_casting: fp16 weights, float32 compute"
    else:
        raise ValueError(mode)
    return rm.get_quantization_recipe(), desc


def widen_ranges(calibration: dict, factor: float) -> dict:
    """Scale every calibrated min/max (tensor name -> {"min", "max"}) by ``factor``."""
    return {name: ({**qsv, "min": qsv["min"] * factor, "max": qsv["max"] * factor}
                   if qsv and "min" in qsv and "max" in qsv else qsv)
            for name, qsv in calibration.items()}


def quantize(float_path: Path, out_path: Path, mode: str,
             calibration: np.ndarray | None = None) -> str:
    """Quantize ``float_path`` into ``out_path``; returns the recipe description."""
    try:
        from ai_edge_quantizer import quantizer
    except ImportError:
        raise ExportError("ai-edge-quantizer is not installed: pip install -e '.[export]'") \
            from None
    rec, desc = recipe_for(mode)
    q = quantizer.Quantizer(str(float_path), rec)
    result = None
    if q.need_calibration:
        if calibration is None or not len(calibration):
            raise ExportError(f"--quantize {mode} needs --calibration DIR of aligned crops")
        from tqdm import tqdm

        x = normalize(calibration, "NHWC")
        samples = [{"args_0": x[i:i + 1]} for i in tqdm(range(len(x)), desc="calibration",
                                                         leave=False)]
        result = q.calibrate({"serving_default": samples}, num_threads=os.cpu_count() or 1)
        if mode == "int16x8":
            result = widen_ranges(result, INT16_RANGE_MARGIN)
        desc += f"; calibrated on {len(x)} aligned faces"
    res = q.quantize(result, enable_progress_report=False)
    res.export_model(str(out_path), overwrite=True)
    return desc


# ---------------------------------------------------------------------------------------------
# LiteRT side


def tflite_embed(path: str | Path, crops_bgr: np.ndarray, num_threads: int = 2,
                 progress: bool = False) -> np.ndarray:
    """Raw (not normalised) embeddings of ``crops_bgr`` by the .tflite through ai-edge-litert."""
    from edgeface_cam.runtime import dequantize_output, load_interpreter, quantize_input

    interp = load_interpreter(path, num_threads)
    d_in = interp.get_input_details()[0]
    d_out = interp.get_output_details()[0]
    it = range(len(crops_bgr))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="litert", leave=False)
    out = []
    for i in it:
        interp.set_tensor(d_in["index"], quantize_input(normalize(crops_bgr[i], "NHWC"), d_in))
        interp.invoke()
        out.append(dequantize_output(interp.get_tensor(d_out["index"]), d_out).reshape(-1))
    return np.stack(out).astype(np.float32)


def latency_ms(path: str | Path, runs: int = 200, num_threads: int = 1) -> float:
    """Median wall time of one face (invoke only) over ``runs`` runs after 10 warm-up runs."""
    from edgeface_cam.runtime import load_interpreter

    interp = load_interpreter(path, num_threads)
    d_in = interp.get_input_details()[0]
    x = np.zeros(d_in["shape"], d_in["dtype"])
    interp.set_tensor(d_in["index"], x)
    for _ in range(10):
        interp.invoke()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def parity(tflite: np.ndarray, refs: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    out = {}
    for label, ref in refs.items():
        c = cosines(tflite, ref)
        out[label] = {"cosine_mean": round(float(c.mean()), 6),
                      "cosine_min": round(float(c.min()), 6)}
    return out


# ---------------------------------------------------------------------------------------------
# The options and the card


@dataclass
class CardInfo:
    """What the card says besides what the export measures."""

    name: str | None = None  # default: the file stem
    accuracy: str | Path | None = None  # training.evaluate --json figures for the card
    license: str | None = None  # default: the authors' terms for their checkpoints
    attribution: str | None = None
    training_data: str | None = None


@dataclass
class ExportOptions:
    """What one export is asked to do; ``python -m training.export`` builds it from its flags."""

    arch: str
    checkpoint: str | Path
    out: str | Path
    quantize: str = "dynamic-int8"
    calibration: str | Path | None = None  # aligned crops for int8 / int16x8
    heldout: str | Path | None = None  # aligned crops to measure parity on
    max_calibration: int = 300
    max_heldout: int = 300
    self_test_image: str | Path | None = None  # default: the fixtures' obama_1.jpg
    min_cosine: float | None = None  # default 0.99; 0.98 for the calibrated modes
    latency_runs: int = 200  # 0: skip
    # CelebA pools (training.calibrate) for the card's impostor calibration; None: none
    threshold_data: str | Path | None = None
    card: CardInfo = field(default_factory=CardInfo)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExportOptions:
        def pick(kind: type) -> dict:
            return {f.name: getattr(args, f.name) for f in fields(kind) if f.name != "card"}

        return cls(**pick(cls), card=CardInfo(**pick(CardInfo)))


@dataclass
class Converted:
    """The written ``.tflite`` and how it was made."""

    out: Path
    checkpoint: Path
    recipe: str  # the quantization step, in words
    note: str  # what was exported instead of the named model, if anything


@dataclass
class SelfTest:
    crop: np.ndarray  # aligned BGR crop
    source: str
    embedding: np.ndarray | None = None  # the .tflite's raw embedding of the crop


def card_for(opts: ExportOptions, conv: Converted, self_test: SelfTest, parity_figures: dict,
             accuracy: dict | None = None, extra: dict | None = None) -> dict:
    from edgeface_cam.runtime import load_interpreter

    out, checkpoint = conv.out, conv.checkpoint
    ckpt_sha = file_sha256(checkpoint)
    interp_in = load_interpreter(out).get_input_details()[0]
    terms = terms_for(ckpt_sha, opts.card)
    card = {
        "name": opts.card.name or out.stem,
        "arch": opts.arch,
        "file": out.name,
        "sha256": file_sha256(out),
        "size_bytes": out.stat().st_size,
        "input": {
            "shape": [int(v) for v in interp_in["shape"]],
            "layout": "NHWC",
            "dtype": np.dtype(interp_in["dtype"]).name,
            "color": "RGB",
            "normalization": "(x/255-0.5)/0.5",
            "crop_size": CROP_SIZE,
            "alignment": "arcface-5pt-112",
        },
        "embedding_size": EMBEDDING_SIZE,
        "quantization": opts.quantize,
        "source_checkpoint": {"file": checkpoint.name, "sha256": ckpt_sha},
        "conversion": {
            "tools": {p: _version(p) for p in ("torch", "timm", "litert-torch",
                                               "ai-edge-quantizer", "ai-edge-litert")},
            "recipe": [
                conv.note or f"load {opts.arch} from the checkpoint (strict)",
                "freeze timm's Fourier positional encoding at 112x112 into a constant",
                "wrap: NHWC input permuted to NCHW inside the graph",
                "litert-torch convert -> float32 .tflite",
                conv.recipe,
            ],
            "date": _dt.date.today().isoformat(),
            "command": "python -m training.export " + " ".join(sys.argv[1:]),
        },
        "parity": parity_figures,
        "accuracy": accuracy,
        "training_data": terms["training_data"],
        "license": terms["license"],
        "attribution": terms["attribution"],
        "self_test": {
            "source": self_test.source,
            "image_png_base64": png_base64(self_test.crop),
            "embedding": [round(float(v), 7) for v in self_test.embedding.reshape(-1)],
            "min_cosine": opts.min_cosine or (0.98 if opts.quantize in CALIBRATED_MODES
                                              else 0.99),
        },
    }
    card.update(extra or {})
    return card


def check_accuracy_source(accuracy: object, path: str, allowed: set[str]) -> None:
    """Refuse figures that ``training.evaluate --json`` measured on another model.

    Its JSON names the model it ran (``model.sha256``: the .tflite, or the torch checkpoint);
    either this export or its source checkpoint is fine. A hand-written summary without that
    field is taken as it is.
    """
    if not isinstance(accuracy, dict):
        raise ExportError(f"--accuracy {path}: expected a JSON object")
    model = accuracy.get("model")
    sha = model.get("sha256") if isinstance(model, dict) else None
    if sha and sha not in allowed:
        raise ExportError(f"--accuracy {path} was measured on another model (sha256 {sha[:16]}), "
                          "not this export or its checkpoint: evaluate this model and pass that")


def read_accuracy(path: str | Path | None, conv: Converted) -> dict | None:
    """The ``--accuracy`` figures, checked to be this model's; None without the flag."""
    if not path:
        return None
    try:
        accuracy = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"cannot read --accuracy {path}: {e}") from None
    check_accuracy_source(accuracy, str(path),
                          {file_sha256(conv.out), file_sha256(conv.checkpoint)})
    return accuracy


def terms_for(checkpoint_sha: str, info: CardInfo) -> dict:
    authors = checkpoint_sha[:16] in AUTHORS_CHECKPOINTS
    unknown = "unspecified: pass --license / --attribution / --training-data"
    return {
        "license": ({"weights": info.license, "code": AUTHORS_LICENSE["code"]} if info.license
                    else AUTHORS_LICENSE if authors else unknown),
        "attribution": info.attribution or (AUTHORS_ATTRIBUTION if authors else unknown),
        "training_data": info.training_data or (AUTHORS_TRAINING_DATA if authors else unknown),
    }


# ---------------------------------------------------------------------------------------------
# The command


def check_paths(opts: ExportOptions) -> tuple[Path, Path]:
    """(checkpoint, out) after the checks that need no model; creates out's folder."""
    checkpoint = Path(opts.checkpoint)
    if not checkpoint.is_file():
        raise ExportError(f"checkpoint not found: {checkpoint}")
    out = Path(opts.out)
    if out.suffix != ".tflite":
        raise ExportError(f"--out must end in .tflite, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if opts.quantize in CALIBRATED_MODES and not opts.calibration:
        raise ExportError(f"--quantize {opts.quantize} needs --calibration DIR of aligned crops "
                          "(python -m training.prepare makes them)")
    return checkpoint, out


def convert(opts: ExportOptions, checkpoint: Path, out: Path,
            calibration: np.ndarray | None) -> tuple[Converted, dict]:
    """Build the torch model, write the (quantized) ``.tflite``; (what was made, the torch
    reference models by label)."""
    from training.models import CheckpointMismatch

    try:
        model, refs, note = build_torch_model(opts.arch, checkpoint)
    except CheckpointMismatch as e:
        raise ExportError(str(e)) from None
    if note:
        print(f"note: {note}", file=sys.stderr)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / "float.tflite"
        convert_float(model, float_path)
        if opts.quantize == "none":
            shutil.copyfile(float_path, out)
            recipe = "no quantization (float32)"
        else:
            recipe = quantize(float_path, out, opts.quantize, calibration)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.0f} s",
          file=sys.stderr)
    return Converted(out, checkpoint, recipe, note), refs


def latency_extra(out: Path, runs: int) -> tuple[float | None, dict]:
    """(median single-thread ms per face or None, the card's ``latency`` entry)."""
    if not runs:
        return None, {}
    latency = latency_ms(out, runs, 1)
    return latency, {"latency": {
        "ms_per_face_median": round(latency, 2), "num_threads": 1, "runs": runs,
        "runtime": "ai-edge-litert",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip()}}


def summary_line(figures: dict, out: Path, latency: float | None) -> str:
    """The last line printed: parity to the torch model(s), size, latency."""
    f = figures["torch_float"]
    line = f"cosine_mean={f['cosine_mean']:.6f} cosine_min={f['cosine_min']:.6f}"
    if "torch_q" in figures:
        q = figures["torch_q"]
        line += f" q_cosine_mean={q['cosine_mean']:.6f} q_cosine_min={q['cosine_min']:.6f}"
    line += f" size_bytes={out.stat().st_size}"
    if latency is not None:
        line += f" latency_ms={latency:.2f}"
    return line


def export(opts: ExportOptions) -> dict:
    """Convert, quantize, measure parity (and latency), write the card; returns the card."""
    checkpoint, out = check_paths(opts)
    calibration = (load_crops(opts.calibration, opts.max_calibration, "calibration")
                   if opts.calibration and opts.quantize in CALIBRATED_MODES else None)
    heldout = load_crops(opts.heldout, opts.max_heldout, "held-out") if opts.heldout else None
    st = SelfTest(*self_test_crop(opts.self_test_image))
    conv, refs = convert(opts, checkpoint, out, calibration)

    # Parity: the exported file run by the device runtime vs the torch model(s).
    faces = heldout if heldout is not None else st.crop[None]
    where = (f"{len(faces)} held-out aligned faces from {opts.heldout}" if heldout is not None
             else "the self-test face only (pass --heldout DIR for a real figure)")
    got = tflite_embed(out, faces, progress=True)
    figures = parity(got, {k: torch_embed(m, faces) for k, m in refs.items()})
    figures_card = {"faces": where, "runtime": f"ai-edge-litert {_version('ai-edge-litert')}",
                    **{f"vs_{k}": v for k, v in figures.items()}}
    st.embedding = tflite_embed(out, st.crop[None])[0]
    latency, extra = latency_extra(out, opts.latency_runs)
    card = card_for(opts, conv, st, figures_card, read_accuracy(opts.card.accuracy, conv), extra)
    card_path = out.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    print(f"wrote {card_path}", file=sys.stderr)
    calibrate_card(out, opts.threshold_data)
    print(summary_line(figures, out, latency))
    return card


def calibrate_card(out: Path, datasets: str | Path | None) -> None:
    """Add the impostor calibration the device's auto threshold needs (training.calibrate)."""
    if datasets is None:
        print(f"no --threshold-data: {out.with_suffix('.json').name} has no calibration, so "
              "recognizer.threshold auto falls back to 0.35 until `python -m "
              f"training.calibrate {out}` adds one", file=sys.stderr)
        return
    from . import calibrate as C

    try:
        cal = C.calibrate(out, C.celeba(datasets), C.device_finder(),
                          command=f"python -m training.export ... --threshold-data {datasets}")
    except (ValueError, FileNotFoundError) as e:  # EvalError is a ValueError
        raise ExportError(f"--threshold-data {datasets}: {e}") from None
    C.write_calibration(out.with_suffix(".json"), cal)
    print(f"calibrated the threshold on {cal['pairs']} impostor pairs", file=sys.stderr)


def parser() -> argparse.ArgumentParser:
    from training.models import list_models

    p = argparse.ArgumentParser(prog="python -m training.export",
                                description=__doc__.split("\n")[0])
    p.add_argument("--arch", required=True, choices=list_models(),
                   help="model name (training.models); a _q name exports its float twin")
    p.add_argument("--checkpoint", required=True, help="the .pt state_dict")
    p.add_argument("--out", required=True, help="FILE.tflite; the card is written as FILE.json")
    p.add_argument("--quantize", choices=QUANTIZE_MODES, default=ExportOptions.quantize)
    p.add_argument("--calibration", help="folder of aligned crops for --quantize int8 / int16x8 "
                                         "(not the --heldout faces)")
    p.add_argument("--heldout", help="folder of aligned crops (not used for calibration) "
                                     "to measure parity on")
    p.add_argument("--max-calibration", type=int, default=ExportOptions.max_calibration)
    p.add_argument("--max-heldout", type=int, default=ExportOptions.max_heldout)
    p.add_argument("--self-test-image", help="photo (or aligned 112x112 crop) for the card's "
                                             "self-test; default: fixtures obama_1.jpg")
    p.add_argument("--min-cosine", type=float,
                   help="self-test threshold (default 0.99; int8 and int16x8 0.98)")
    p.add_argument("--latency-runs", type=int, default=ExportOptions.latency_runs,
                   help="runs for the single-thread latency median (0: skip)")
    p.add_argument("--threshold-data", metavar="DIR",
                   help="folder holding celeba-subset/ and celeba-10k-identities.tsv (e.g. "
                        "../shared/datasets): add the impostor calibration for recognizer."
                        "threshold auto to the card (training.calibrate; ~2 min)")
    p.add_argument("--name", help="card name (default: the file stem)")
    p.add_argument("--accuracy", help="JSON file of verification results to put in the card")
    p.add_argument("--license", help="licence of the weights (default: the authors' terms for "
                                     "their checkpoints)")
    p.add_argument("--attribution")
    p.add_argument("--training-data")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        export(ExportOptions.from_args(args))
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
