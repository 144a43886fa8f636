"""The EdgeFace model family: timm EdgeNeXt + low-rank linears, under the authors' names.

State-dict keys are exactly those of the published checkpoints: the wrapper holds the timm
network as ``model`` and a low-rank linear holds ``linear1`` (in -> r, no bias) and ``linear2``
(r -> out). The ``_q`` variants are what the authors shipped as ``edgeface_xs_q.pt`` /
``edgeface_xxs_q.pt``: the FULL-rank EdgeNeXt (their files hold no ``linear1`` keys) with every
``nn.Linear`` as PyTorch dynamic int8.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

EMBEDDING_SIZE = 512


class LoRaLin(nn.Module):
    """A linear layer factored into two: in -> rank (no bias) -> out."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.linear1 = nn.Linear(in_features, rank, bias=False)
        self.linear2 = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.linear1(x))


def low_rank(in_features: int, out_features: int, gamma: float) -> int:
    return max(2, int(min(in_features, out_features) * gamma))


def replace_linear_with_low_rank(module: nn.Module, gamma: float) -> nn.Module:
    """Replace, recursively, every nn.Linear whose attribute name lacks 'head' by a LoRaLin.

    The test is on the attribute's own name, so ``head.fc`` is replaced too (as the authors do).
    """
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and "head" not in name:
            rank = low_rank(child.in_features, child.out_features, gamma)
            setattr(module, name, LoRaLin(child.in_features, child.out_features, rank,
                                          child.bias is not None))
        else:
            replace_linear_with_low_rank(child, gamma)
    return module


class EdgeFace(nn.Module):
    """The authors' wrapper (TimmFRWrapperV2): timm backbone, classifier reset to the embedding."""

    def __init__(self, backbone: str, embedding_size: int = EMBEDDING_SIZE) -> None:
        super().__init__()
        self.backbone = backbone
        self.model = timm.create_model(backbone, pretrained=False)
        self.model.reset_classifier(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@dataclass(frozen=True)
class ModelSpec:
    backbone: str
    gamma: float | None  # low-rank ratio; None keeps full-rank linears
    quantized: bool = False  # dynamic int8 Linear layers (the authors' _q files)


# Parameters and MFLOPs are measured from the built model (``training.stats``), not stored.
MODELS: dict[str, ModelSpec] = {
    "edgeface_base": ModelSpec("edgenext_base", None),
    "edgeface_s_gamma_05": ModelSpec("edgenext_small", 0.5),
    "edgeface_xs_gamma_06": ModelSpec("edgenext_x_small", 0.6),
    "edgeface_xxs": ModelSpec("edgenext_xx_small", None),
    "edgeface_xs_q": ModelSpec("edgenext_x_small", None, quantized=True),
    "edgeface_xxs_q": ModelSpec("edgenext_xx_small", None, quantized=True),
}


def get_model(name: str) -> nn.Module:
    """Build a model by its published name (see ``MODELS``); weights are random."""
    base = name.removesuffix("_float")
    if base not in MODELS or (base != name and not MODELS[base].quantized):
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    spec = MODELS[base]
    model: nn.Module = EdgeFace(spec.backbone)
    if spec.gamma is not None:
        replace_linear_with_low_rank(model, spec.gamma)
    if spec.quantized and base == name:
        model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    return model.eval()


def list_models() -> list[str]:
    return list(MODELS) + [n + "_float" for n, s in MODELS.items() if s.quantized]


class CheckpointMismatch(ValueError):
    """A checkpoint whose keys or shapes do not fit the architecture."""


def read_checkpoint(path: str | Path) -> tuple[dict, str | None]:
    """(state_dict, the network name the file records or None).

    Takes a bare state_dict, ``{"state_dict": ...}``, or our training files
    (``{"backbone": ..., "network": NAME}``: model.pt and checkpoint_rank*.pt).
    """
    obj = torch.load(path, map_location="cpu", weights_only=False)
    network = obj.get("network") if isinstance(obj, dict) else None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and "backbone" in obj and isinstance(obj["backbone"], dict):
        obj = obj["backbone"]
    if not isinstance(obj, dict):
        raise CheckpointMismatch(f"{path}: not a state_dict (found {type(obj).__name__})")
    return obj, network if isinstance(network, str) else None



def _shape(v: object) -> tuple | None:
    return tuple(v.shape) if isinstance(v, torch.Tensor) else None


def check_state_dict(model: nn.Module, state: dict, source: str = "checkpoint") -> None:
    """Raise CheckpointMismatch naming missing / unexpected keys and shape clashes."""
    want = model.state_dict()
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    clashes = [f"{k}: file {_shape(state[k])} vs model {_shape(want[k])}"
               for k in sorted(set(want) & set(state))
               if _shape(state[k]) is not None and _shape(state[k]) != _shape(want[k])]
    if missing or unexpected or clashes:
        def few(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if clashes:
            parts.append(f"shape mismatches: {few(clashes)}")
        raise CheckpointMismatch(f"{source} does not fit this architecture; " + "; ".join(parts))


def load_model(name: str, checkpoint: str | Path | None = None) -> nn.Module:
    """Build ``name`` and load ``checkpoint`` strictly, with a clear error when it does not fit.

    A ``_float`` name loads the authors' ``_q`` file and dequantises it (see ``dequantize``).
    """
    if name.endswith("_float"):
        quantized = load_model(name.removesuffix("_float"), checkpoint)
        return dequantize(quantized, name)
    model = get_model(name)
    if checkpoint is not None:
        state, network = read_checkpoint(checkpoint)
        if network and network != name and network in MODELS:
            raise CheckpointMismatch(f"{checkpoint} holds {network}, not {name}: "
                                     f"pass --arch {network}")
        check_state_dict(model, state, str(checkpoint))
        model.load_state_dict(state, strict=True)
    return model.eval()


def dequantize(quantized: nn.Module, float_arch: str) -> nn.Module:
    """Turn a dynamic-int8 model into its float twin: weight = (q - zero_point) * scale, exactly.

    ``Tensor.dequantize`` applies the per-tensor or per-channel parameters the file holds.
    """
    model = get_model(float_arch)
    qmods = dict(quantized.named_modules())
    state = model.state_dict()
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            q = qmods[name]
            state[name + ".weight"] = q.weight().dequantize()
            if mod.bias is not None:
                state[name + ".bias"] = q.bias().detach().clone()
    qstate = quantized.state_dict()
    for k in state:
        if k in qstate and isinstance(qstate[k], torch.Tensor) and not qstate[k].is_quantized:
            state[k] = qstate[k]
    model.load_state_dict(state, strict=True)
    return model.eval()


def freeze_positional_encoding(model: nn.Module, input_size: int = 112) -> nn.Module:
    """Replace each Fourier positional encoding by the constant it computes at ``input_size``.

    timm's PositionalEncodingFourier builds its grid from the runtime shape with cumsum/arange,
    which exporters trace poorly; at a fixed input size the result is a constant.
    """
    from timm.models.edgenext import PositionalEncodingFourier

    sizes: dict[str, tuple[int, int, int]] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, PositionalEncodingFourier):
            def hook(m: nn.Module, args: tuple, _n: str = name) -> None:
                sizes[_n] = tuple(args[0])
            hooks.append(mod.register_forward_pre_hook(hook))
    if not hooks:
        return model
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size))
    for h in hooks:
        h.remove()
    for name, shape in sizes.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        with torch.no_grad():
            value = getattr(parent, attr)(shape)
        setattr(parent, attr, _ConstantEncoding(value))
    model.train(was_training)
    return model


class _ConstantEncoding(nn.Module):
    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("value", value.detach().clone(), persistent=False)

    def forward(self, shape: tuple[int, int, int]) -> torch.Tensor:
        return self.value.expand(shape[0], -1, -1, -1)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_mflops(model: nn.Module, input_size: int = 112) -> float:
    """MFLOPs in the paper's convention: 2 x multiply-accumulates for one 3 x 112 x 112 face."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, input_size, input_size))
    return counter.get_total_flops() / 1e6

