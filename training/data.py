"""Training data: insightface RecordIO (read and write, without mxnet), image folders, the
recipe's augmentations, and a distributed, resumable DataLoader.

Every sample leaves here through ``edgeface_cam.align.normalize`` (NCHW): the one preprocessing
truth the exported model and the device share.

Command line (convert an image folder into ``train.rec`` + ``train.idx``)::

    python -m training.data pack FOLDER OUT_DIR [--align [--pad 0.5]] [--quality 95]
"""

from __future__ import annotations

import argparse
import bisect
import os
import random
import struct
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from edgeface_cam.align import CROP_SIZE, normalize, to_bgr
from edgeface_cam.sources import IMAGE_SUFFIXES
from training.common import DEFAULT_MIN_FACE, MainFace, open_detector

# --- insightface / MXNet RecordIO --------------------------------------------------------------
# Written out because mxnet is unmaintained and does not install on current Python; the format is
# small. A ``.rec`` file is a sequence of records, each:
#   uint32 magic 0xced7230a | uint32 lrec | payload | zero padding to a multiple of 4 bytes
# where lrec = cflag << 29 | length. cflag 0 is a whole record; a writer that finds the magic at a
# 4-byte aligned offset inside the payload splits the payload there into parts with cflag 1
# (first), 2 (middle), 3 (last), dropping the magic; the reader puts the magic back between parts.
# The payload is an IRHeader, struct "IfQQ" (flag uint32, label float32, id uint64, id2 uint64),
# then, when flag > 0, ``flag`` float32 labels (which replace ``label``), then the JPEG bytes.
# The ``.idx`` file is text, one "key<TAB>byte offset" line per record.
# insightface layout: record 0 is a header with flag 2 and labels (a, b): records 1..a-1 are the
# images; records a..b-1 are one per identity, each with labels (first image, end image).
# Images have flag 0 and their identity in ``label`` (or the first of their labels).
MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_IRHEADER = struct.Struct("<IfQQ")


def pack_record(labels: float | Sequence[float], data: bytes, id_: int = 0) -> bytes:
    """IRHeader + labels + data: the payload of one record (``mx.recordio.pack``)."""
    if isinstance(labels, (int, float)):
        return _IRHEADER.pack(0, float(labels), id_, 0) + data
    labels = np.asarray(labels, dtype="<f4")
    return _IRHEADER.pack(len(labels), 0.0, id_, 0) + labels.tobytes() + data


def unpack_record(payload: bytes) -> tuple[np.ndarray, bytes]:
    """Payload -> (labels float32 array, data bytes)."""
    flag, label, _, _ = _IRHEADER.unpack_from(payload)
    body = payload[_IRHEADER.size:]
    if flag > 0:
        return np.frombuffer(body, "<f4", flag).copy(), body[flag * 4:]
    return np.array([label], dtype=np.float32), body


def _frame(cflag: int, part: bytes) -> bytes:
    pad = (-len(part)) % 4
    return _MAGIC_BYTES + struct.pack("<I", cflag << 29 | len(part)) + part + b"\0" * pad


class RecordWriter:
    """Writes ``.rec`` + ``.idx`` in MXNet's indexed RecordIO format (for tests and ``pack``)."""

    def __init__(self, rec_path: str | Path, idx_path: str | Path) -> None:
        self._rec = open(rec_path, "wb")  # noqa: SIM115 (closed in close())
        self._idx = open(idx_path, "w")  # noqa: SIM115

    def write(self, key: int, payload: bytes) -> None:
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        cuts = [i for i in range(0, len(payload) - 3, 4) if payload[i:i + 4] == _MAGIC_BYTES]
        if not cuts:
            self._rec.write(_frame(0, payload))
            return
        starts = [0] + [c + 4 for c in cuts]
        ends = [*cuts, len(payload)]
        for n, (a, b) in enumerate(zip(starts, ends, strict=True)):
            self._rec.write(_frame(1 if n == 0 else 3 if n == len(cuts) else 2, payload[a:b]))

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordReader:
    """Random access to an indexed ``.rec``; opens its file lazily so it survives fork/pickle."""

    def __init__(self, rec_path: str | Path, idx_path: str | Path) -> None:
        self.rec_path = str(rec_path)
        # Two numpy arrays, not a dict: 12.7 M WebFace records stay ~200 MB, shared by forked
        # workers without copy-on-write refcount churn. fromstring parses the text in C.
        table = np.fromstring(Path(idx_path).read_text(), dtype=np.int64, sep=" ")
        if table.size % 2:
            raise ValueError(f"{idx_path}: not an index of 'key<TAB>offset' lines")
        table = table.reshape(-1, 2)
        table = table[np.argsort(table[:, 0], kind="stable")]
        self._keys, self._offsets = table[:, 0].copy(), table[:, 1].copy()
        self._file = None
        self._pid = -1

    def keys(self) -> list[int]:
        return self._keys.tolist()

    def offset(self, key: int) -> int:
        i = int(np.searchsorted(self._keys, key))
        if i == len(self._keys) or self._keys[i] != key:
            raise KeyError(f"{self.rec_path}: no record {key}")
        return int(self._offsets[i])

    def read(self, key: int) -> bytes:
        if self._file is None or self._pid != os.getpid():  # one handle per worker process
            self._file = open(self.rec_path, "rb")  # noqa: SIM115
            self._pid = os.getpid()
        f = self._file
        f.seek(self.offset(key))
        parts = []
        while True:
            magic, lrec = struct.unpack("<II", f.read(8))
            if magic != MAGIC:
                raise ValueError(f"{self.rec_path}: bad record magic at key {key}")
            cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
            parts.append(f.read(length))
            f.seek((-length) % 4, os.SEEK_CUR)
            if cflag in (0, 3):
                return _MAGIC_BYTES.join(parts)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": -1}


# --- datasets ----------------------------------------------------------------------------------


def decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("undecodable image")
    return to_bgr(img)


class FaceAligner:
    """Largest face -> aligned 112x112 crop, or None: ``training.common.MainFace`` (YuNet + the
    template, the device's own path, as ``training.prepare``), with the detector built on first
    use inside each worker (OpenCV nets do not pickle). ``pad``: see ``MainFace`` (for tight
    crops such as UTKFace).
    """

    def __init__(self, pad: float = 0.0) -> None:
        self.pad = pad
        self._main: MainFace | None = None

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        if self._main is None:
            self._main = MainFace(open_detector(), self.pad, DEFAULT_MIN_FACE)
        return self._main.crop(image)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_main": None}


class FaceDataset(Dataset):
    """Base: subclasses give ``__len__``, ``num_classes`` and ``load(i) -> (BGR uint8, label)``;
    this adds augmentation and normalisation.

    Augmentation randomness comes from (seed, epoch, index), so a sample is the same whatever
    worker or rank loads it, and a resumed run sees exactly what an uninterrupted run would.
    """

    num_classes: int

    def __init__(self, augment: bool = True, seed: int = 0) -> None:
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def load(self, index: int) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img, label = self.load(index)
        if img.shape[:2] != (CROP_SIZE, CROP_SIZE):
            img = cv2.resize(img, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
        if self.augment:
            img = augment(img, np.random.default_rng([self.seed, self.epoch, index]))
        return torch.from_numpy(normalize(img, "NCHW")[0]), label


class RecordDataset(FaceDataset):
    """insightface ``train.rec`` + ``train.idx`` (aligned 112x112 JPEGs)."""

    def __init__(self, root: str | Path, augment: bool = True, seed: int = 0) -> None:
        super().__init__(augment, seed)
        root = Path(root)
        self.reader = RecordReader(root / "train.rec", root / "train.idx")
        head, _ = unpack_record(self.reader.read(0))
        if len(head) >= 2:  # insightface header: images are records 1 .. head[0]-1
            self.keys = np.arange(1, int(head[0]))
            self.num_classes = int(head[1] - head[0])
        else:  # a plain indexed .rec: every record is an image; count identities once
            self.keys = np.array(self.reader.keys())
            self.num_classes = 1 + max(int(unpack_record(self.reader.read(int(k)))[0][0])
                                       for k in self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def load(self, index: int) -> tuple[np.ndarray, int]:
        labels, data = unpack_record(self.reader.read(int(self.keys[index])))
        return decode(data), int(labels[0])


def list_image_folder(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """One sub-folder per identity (sorted names -> labels 0..K-1)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        for p in sorted((root / name).iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(p)
                labels.append(label)
    if not paths:
        raise ValueError(f"{root}: no images in identity sub-folders")
    return paths, np.array(labels, dtype=np.int64), names


class ImageFolderDataset(FaceDataset):
    """``root/<identity>/<image>``: aligned 112x112 crops, or raw photos with ``align=True``
    (largest face, aligned on the fly; a photo without a detected face is used resized whole)."""

    def __init__(self, root: str | Path, augment: bool = True, seed: int = 0,
                 align: bool = False) -> None:
        super().__init__(augment, seed)
        self.paths, self.labels, self.classes = list_image_folder(root)
        self.num_classes = len(self.classes)
        self.aligner = FaceAligner() if align else None

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> tuple[np.ndarray, int]:
        img = cv2.imread(str(self.paths[index]), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"cannot read image {self.paths[index]}")
        img = to_bgr(img)
        if self.aligner is not None:
            crop = self.aligner(img)
            img = img if crop is None else crop
        return img, int(self.labels[index])


def open_dataset(path: str | Path, augment: bool = True, seed: int = 0,
                 align: bool = False) -> FaceDataset:
    """A folder with ``train.rec`` + ``train.idx`` is RecordIO; any other folder is images."""
    path = Path(path)
    if (path / "train.rec").is_file() and (path / "train.idx").is_file():
        return RecordDataset(path, augment, seed)
    if path.is_dir():
        return ImageFolderDataset(path, augment, seed, align)
    raise FileNotFoundError(f"training data not found: {path} (want train.rec + train.idx "
                            "or one folder per identity)")


# --- augmentation (official recipe) ------------------------------------------------------------
def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip p=.5; down-scale to 56-89 px and back p=.1; Gaussian blur p=.2; hue/saturation
    jitter p=.2; greyscale p=.1. OpenCV on uint8 BGR (cheap on CPU workers).

    The blur sigma range (0.1-2.0) is torchvision's GaussianBlur default; the jitter bounds
    (hue +-0.1 turn, saturation x0.7-1.3) are ours: the recipe names only the probabilities.
    """
    h, w = img.shape[:2]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if rng.random() < 0.1:
        side = int(rng.integers(56, 90))
        small = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.2:
        img = cv2.GaussianBlur(img, (5, 5), float(rng.uniform(0.1, 2.0)))
    if rng.random() < 0.2:
        hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-18, 18)) % 180  # OpenCV hue is 0..179
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.7, 1.3), 0, 255)
        img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    if rng.random() < 0.1:
        img = cv2.cvtColor(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2GRAY),
                           cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(img)


# --- loader ------------------------------------------------------------------------------------
class ResumableSampler(DistributedSampler):
    """DistributedSampler that can skip the batches a resumed run has already seen this epoch."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas, rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return self.num_samples - self.skip


def _seed_worker(worker_id: int) -> None:
    # torch gives each worker initial_seed = base_seed + worker_id; the base seed comes from the
    # loader's generator, seeded per rank. Seed numpy/random too, for any third-party code.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    cv2.setNumThreads(1)  # workers already run in parallel; OpenCV threads would oversubscribe


def make_loader(dataset: FaceDataset, batch_size: int, rank: int, world_size: int, seed: int,
                num_workers: int = 2, pin_memory: bool = True) -> DataLoader:
    sampler = ResumableSampler(dataset, world_size, rank, seed)
    if len(sampler) < batch_size:
        raise ValueError(f"{len(dataset)} images over {world_size} rank(s) is less than one "
                         f"batch of {batch_size}")
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=pin_memory, drop_last=True, worker_init_fn=_seed_worker,
                      generator=torch.Generator().manual_seed(seed + rank),
                      persistent_workers=False)


def set_epoch(loader: DataLoader, epoch: int, skip_batches: int = 0) -> None:
    """Select the epoch's shuffle and augmentation, skipping batches already trained on."""
    loader.sampler.set_epoch(epoch)
    loader.sampler.skip = skip_batches * loader.batch_size
    loader.dataset.epoch = epoch


# --- pack: image folder -> train.rec / train.idx -----------------------------------------------
def pack_folder(folder: str | Path, out_dir: str | Path, align: bool = False,
                quality: int = 95, pad: float = 0.0) -> tuple[int, int, int]:
    """Write the insightface layout; returns (images written, identities, images skipped).

    With ``align`` every photo is detected and aligned once; photos without a face are skipped.
    """
    paths, labels, _ = list_image_folder(folder)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    aligner = FaceAligner(pad) if align else None
    crops: list[tuple[int, bytes]] = []
    skipped = 0
    for path, label in zip(paths, labels, strict=True):
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            skipped += 1
            continue
        img = to_bgr(img)
        if aligner is not None:
            img = aligner(img)
            if img is None:
                skipped += 1
                continue
        if img.shape[:2] != (CROP_SIZE, CROP_SIZE):
            img = cv2.resize(img, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
        ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError(f"JPEG encoding failed for {path}")
        crops.append((int(label), jpg.tobytes()))
    # Identities that lost every photo are dropped; the rest are renumbered 0..K-1 in order.
    remap = {old: new for new, old in enumerate(sorted({lab for lab, _ in crops}))}
    crops = [(remap[lab], data) for lab, data in crops]
    write_records(out_dir, crops)
    return len(crops), len(remap), skipped


def write_records(out_dir: str | Path, samples: Sequence[tuple[int, bytes]]) -> None:
    """(label, encoded image) pairs -> insightface ``train.rec`` + ``train.idx``."""
    samples = sorted(samples, key=lambda s: s[0])
    out_dir = Path(out_dir)
    n = len(samples)
    labels = [lab for lab, _ in samples]
    ids = sorted(set(labels))
    with RecordWriter(out_dir / "train.rec", out_dir / "train.idx") as w:
        w.write(0, pack_record([n + 1, n + 1 + len(ids)], b""))
        for key, (label, data) in enumerate(samples, start=1):
            w.write(key, pack_record(float(label), data, key))
        for j, ident in enumerate(ids):
            first = bisect.bisect_left(labels, ident) + 1
            end = bisect.bisect_right(labels, ident) + 1
            w.write(n + 1 + j, pack_record([first, end], b""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.data",
                                description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="image folder (one sub-folder per identity) -> train.rec/.idx")
    pk.add_argument("folder")
    pk.add_argument("out_dir")
    pk.add_argument("--align", action="store_true", help="detect + align raw photos (YuNet)")
    pk.add_argument("--pad", type=float, default=0.0,
                    help="with --align: replicate the border by this fraction first (tight crops)")
    pk.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    args = p.parse_args(argv)
    try:
        n, k, skipped = pack_folder(args.folder, args.out_dir, args.align, args.quality,
                                       args.pad)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {n} images of {k} identities to {args.out_dir}/train.rec "
          f"({skipped} skipped: unreadable or no face)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
