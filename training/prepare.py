"""Detect, align and cache 112x112 face crops: the device's own path, applied to a folder.

    python -m training.prepare ../shared/datasets/celeba-subset /tmp/cache/celeba-subset
    python -m training.prepare ../shared/datasets/utkface /tmp/cache/utkface --pad 0.5 --limit 400

The folder structure (identity folders) is kept. Each image gives the crop of its largest face,
found by edgeface_cam's YuNet and warped by edgeface_cam.align.align_face (``common.MainFace``,
the one find-and-align path of training), so training, evaluation and export see exactly what
the device will. Already-cached crops, and images already
known to hold no face (``OUT/no_face.txt``), are skipped: an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgeface_cam.align import CROP_SIZE
from edgeface_cam.sources import IMAGE_SUFFIXES

from .common import DEFAULT_MIN_FACE, MainFace, open_detector

NO_FACE_LIST = "no_face.txt"


@dataclass
class PrepareStats:
    images: int = 0
    written: int = 0
    cached: int = 0
    no_face: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"images={self.images} written={self.written} cached={self.cached} "
                f"no_face={len(self.no_face)} unreadable={len(self.unreadable)}")


def list_images(src: str | Path) -> list[Path]:
    """Every image file below ``src``, sorted."""
    return sorted(p for p in Path(src).rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def spread(items: list, limit: int | None) -> list:
    """At most ``limit`` items evenly spread over the sorted list (so every identity folder is
    sampled, not just the first few), the same ones on every run."""
    if not limit or len(items) <= limit:
        return items
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in sorted(set(idx))]


def prepare(src: str | Path, out: str | Path, finder: MainFace | None = None,
            limit: int | None = None, fmt: str = "png", progress: bool = True) -> PrepareStats:
    """Crop the main face of every image below ``src`` into ``out`` (same relative paths);
    ``finder`` defaults to YuNet's largest face of at least 20 px, unpadded."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise ValueError(f"source folder not found: {src}")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ValueError(f"output folder {out} must be outside the source folder {src}")
    out.mkdir(parents=True, exist_ok=True)
    finder = finder or MainFace(open_detector(), min_face=DEFAULT_MIN_FACE)
    no_face_path = out / NO_FACE_LIST
    known_no_face = (set(no_face_path.read_text().splitlines()) if no_face_path.is_file()
                     else set())
    files = spread(list_images(src), limit)
    stats = PrepareStats(images=len(files))
    it = files
    if progress:
        from tqdm import tqdm

        it = tqdm(files, desc=f"prepare {src.name}", unit="img")
    for path in it:
        rel = path.relative_to(src)
        dst = (out / rel).with_suffix("." + fmt)
        if dst.is_file():
            stats.cached += 1
            continue
        if rel.as_posix() in known_no_face:
            stats.no_face.append(rel.as_posix())
            continue
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            stats.unreadable.append(rel.as_posix())
            continue
        crop = finder.crop(image)
        if crop is None:
            stats.no_face.append(rel.as_posix())
            with no_face_path.open("a") as f:
                f.write(rel.as_posix() + "\n")
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.stem + ".part" + dst.suffix)
        # Write then rename: an interrupted run never leaves a half-written crop that a later
        # run would take as cached.
        if not cv2.imwrite(str(tmp), crop):
            raise OSError(f"cannot write {tmp}")
        tmp.replace(dst)
        stats.written += 1
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.prepare",
                                description="detect + align + cache 112x112 face crops")
    p.add_argument("src", help="folder of photos (identity sub-folders are kept)")
    p.add_argument("out", help="cache folder for the aligned crops")
    p.add_argument("--detector", choices=["yunet"], default="yunet")
    p.add_argument("--min-face", type=float, default=DEFAULT_MIN_FACE,
                   help=f"smallest face side in pixels (default {DEFAULT_MIN_FACE:g})")
    p.add_argument("--score", type=float, default=0.8, help="detector score threshold")
    p.add_argument("--pad", type=float, default=0.0,
                   help="replicate-border padding, fraction of the longer side per border; "
                        "use 0.5 for tight crops (utkface, celeba-10k)")
    p.add_argument("--limit", type=int, help="at most N images, evenly spread over the folder")
    p.add_argument("--format", choices=["png", "jpg"], default="png")
    args = p.parse_args(argv)
    if args.pad < 0 or args.min_face < 0 or (args.limit is not None and args.limit < 1):
        print("error: --pad and --min-face must be >= 0 and --limit >= 1", file=sys.stderr)
        return 2
    try:
        finder = MainFace(open_detector("yunet", args.score), args.pad, args.min_face)
        stats = prepare(args.src, args.out, finder, args.limit, args.format)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(stats.summary())
    if stats.no_face:
        print(f"{len(stats.no_face)} images gave no face (listed in {Path(args.out) / NO_FACE_LIST}"
              f"{'; try --pad 0.5 for tight crops' if args.pad == 0 else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["CROP_SIZE", "PrepareStats", "prepare"]
