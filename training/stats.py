"""Model statistics: parameters, MFLOPs (paper convention) and size on disk.

    python -m training.stats edgeface_xs_gamma_06 edgeface_xxs [--json]
    python -m training.stats assets/edgeface_xs.tflite          # size of an exported file

MFLOPs = 2 x multiply-accumulates for one 1x3x112x112 face, as in the EdgeFace paper.
Size: the fp32 state_dict as torch.save writes it, or the file itself for a .tflite/.pt path.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path


def model_stats(name: str) -> dict:
    import torch

    from .models import MODELS, count_mflops, count_params, get_model

    model = get_model(name)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    spec = MODELS.get(name.removesuffix("_float"))
    quantized = bool(spec and spec.quantized and not name.endswith("_float"))
    return {
        "name": name,
        # dynamic-int8 Linear weights are packed, not Parameters: count them from the float twin
        "params_m": round(count_params(get_model(name + "_float") if quantized else model) / 1e6,
                          4),
        "mflops": round(count_mflops(model), 2) if not quantized else None,
        "size_mb": round(buf.getbuffer().nbytes / 1e6, 3),
    }


def file_stats(path: Path) -> dict:
    """Size of an exported file; for a training ``.pt`` that records its network (model.pt,
    checkpoint_rank*.pt), that network's parameters and MFLOPs too."""
    row = {"name": str(path), "params_m": None, "mflops": None,
           "size_mb": round(path.stat().st_size / 1e6, 3)}
    if path.suffix in (".pt", ".pth"):
        from .models import MODELS, read_checkpoint

        try:
            network = read_checkpoint(path)[1]
        except Exception:  # not a torch file we can read: its size is all we report
            network = None
        if network in MODELS:
            figures = model_stats(network)
            row.update(name=f"{path} ({network})", params_m=figures["params_m"],
                       mflops=figures["mflops"])
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.stats", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="NAME_OR_FILE",
                        help="model names (see training.models.list_models) or exported files")
    parser.add_argument("--json", action="store_true", help="print one JSON list")
    args = parser.parse_args(argv)

    from .models import list_models

    rows = []
    for item in args.models:
        path = Path(item)
        if path.suffix in (".tflite", ".pt", ".pth", ".onnx"):
            if not path.is_file():
                parser.exit(2, f"error: file not found: {path}\n")
            rows.append(file_stats(path))
        elif item in list_models():
            rows.append(model_stats(item))
        else:
            parser.exit(2, f"error: unknown model {item!r}; choose from {', '.join(list_models())}"
                           " or give a .tflite/.pt file\n")
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"{'model':32} {'params (M)':>10} {'MFLOPs':>9} {'size (MB)':>9}")
        for r in rows:
            p = "-" if r["params_m"] is None else f"{r['params_m']:.4f}"
            f = "-" if r["mflops"] is None else f"{r['mflops']:.2f}"
            print(f"{r['name']:32} {p:>10} {f:>9} {r['size_mb']:>9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
