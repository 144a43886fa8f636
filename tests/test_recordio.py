"""training.data: insightface RecordIO without mxnet, image folders, augmentation, loader."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from edgeface_cam.align import TEMPLATE, normalize
from edgeface_cam.detect import YuNetDetector
from tests.conftest import FIXTURES, PEOPLE

pytest.importorskip("torch")
from training import data

MAGIC = 0xCED7230A  # MXNet's kMagic, written out here independently of the code under test


def _frame(cflag: int, payload: bytes) -> bytes:
    return (struct.pack("<II", MAGIC, cflag << 29 | len(payload)) + payload
            + b"\0" * (-len(payload) % 4))


def _payload(labels: list[float], body: bytes) -> bytes:
    """IRHeader (flag, label, id, id2) as mx.recordio.pack writes it."""
    if len(labels) == 1:
        return struct.pack("<IfQQ", 0, labels[0], 0, 0) + body
    return struct.pack("<IfQQ", len(labels), 0, 0, 0) + struct.pack(f"<{len(labels)}f",
                                                                     *labels) + body


def _write_raw(folder, frames: list[bytes]) -> None:
    offsets, pos = [], 0
    for f in frames:
        offsets.append(pos)
        pos += len(f)
    (folder / "train.rec").write_bytes(b"".join(frames))
    (folder / "train.idx").write_text("".join(f"{i}\t{o}\n" for i, o in enumerate(offsets)))


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    """Real photos as 112x112 JPEGs (content need not be aligned for format tests)."""
    out = []
    for p in sorted(PEOPLE.glob("*/*_1.*"))[:4]:
        img = cv2.resize(cv2.imread(str(p)), (112, 112), interpolation=cv2.INTER_AREA)
        out.append(cv2.imencode(".jpg", img)[1].tobytes())
    return out


def test_reads_a_hand_built_insightface_file(tmp_path, jpegs):
    # record 0: header (first id record, end); 1..3: images; 4..5: identity ranges
    frames = [_frame(0, _payload([4, 6], b"")),
              _frame(0, _payload([0.0], jpegs[0])),
              _frame(0, _payload([0.0], jpegs[1])),
              _frame(0, _payload([1.0, 7.0], jpegs[2])),  # a multi-label image: first is the id
              _frame(0, _payload([1, 3], b"")),
              _frame(0, _payload([3, 4], b""))]
    _write_raw(tmp_path, frames)
    ds = data.RecordDataset(tmp_path, augment=False)
    assert len(ds) == 3 and ds.num_classes == 2
    for i, (jpg, label) in enumerate(zip(jpegs[:3], [0, 0, 1], strict=True)):
        img, lab = ds.load(i)
        assert lab == label
        np.testing.assert_array_equal(img, cv2.imdecode(np.frombuffer(jpg, np.uint8), 1))


def test_reads_a_record_split_at_an_embedded_magic(tmp_path):
    body = b"abcd" + struct.pack("<I", MAGIC) + b"efghij"  # magic at an aligned offset
    payload = _payload([5.0], body)
    cut = payload.index(struct.pack("<I", MAGIC))
    _write_raw(tmp_path, [_frame(1, payload[:cut]), _frame(3, payload[cut + 4:])])
    reader = data.RecordReader(tmp_path / "train.rec", tmp_path / "train.idx")
    assert reader.read(0) == payload


def test_writer_round_trip_with_insightface_layout(tmp_path, jpegs):
    labels = [2, 0, 1, 0]
    samples = list(zip(labels, jpegs, strict=True))
    data.write_records(tmp_path, samples)
    reader = data.RecordReader(tmp_path / "train.rec", tmp_path / "train.idx")
    head, _ = data.unpack_record(reader.read(0))
    assert head.tolist() == [5, 8]  # 4 images (records 1..4), 3 identities (records 5..7)
    ds = data.RecordDataset(tmp_path, augment=False)
    assert len(ds) == 4 and ds.num_classes == 3
    got = {data.unpack_record(reader.read(k))[1]: int(data.unpack_record(reader.read(k))[0][0])
           for k in range(1, 5)}
    assert got == {jpg: lab for lab, jpg in samples}  # exact bytes, right labels
    for ident, key in zip(range(3), range(5, 8), strict=True):
        first, end = data.unpack_record(reader.read(key))[0].astype(int)
        assert all(int(data.unpack_record(reader.read(k))[0][0]) == ident
                   for k in range(first, end))
        assert end - first == labels.count(ident)


def test_writer_splits_payloads_holding_the_magic(tmp_path):
    payload = _payload([1.0], struct.pack("<I", MAGIC) * 3 + b"xyz")
    with data.RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
        w.write(0, payload)
        w.write(1, _payload([2.0], b"plain"))
    raw = (tmp_path / "train.rec").read_bytes()
    assert struct.unpack_from("<II", raw)[1] >> 29 == 1  # the first part of a split record
    reader = data.RecordReader(tmp_path / "train.rec", tmp_path / "train.idx")
    assert reader.read(0) == payload
    assert data.unpack_record(reader.read(1))[1] == b"plain"


def test_pack_aligns_the_fixture_people(tmp_path):
    n, k, skipped = data.pack_folder(PEOPLE, tmp_path, align=True)
    photos = [p for p in PEOPLE.rglob("*") if p.suffix.lower() in (".jpg", ".png")]
    assert (n, k, skipped) == (len(photos), 6, 0)
    ds = data.RecordDataset(tmp_path, augment=False)
    assert ds.num_classes == 6 and len(ds) == n
    # The aligned crops put the eyes where the template says (detected again, on the crop).
    det = YuNetDetector(input_width=0)
    for i in range(0, n, 4):
        crop, _ = ds.load(i)
        faces = det.detect(crop)
        assert faces, f"no face in packed crop {i}"
        assert np.abs(faces[0].landmarks[:2] - TEMPLATE[:2]).max() < 6


def test_pack_cli_reports_a_missing_folder_in_one_line(tmp_path, capsys):
    assert data.main(["pack", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


def test_cli_help_describes_the_module_in_whole_sentences(capsys):
    with pytest.raises(SystemExit):
        data.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "image folders, the recipe's augmentations, and a distributed, resumable DataLoader." \
        in text


def test_image_folder_dataset_normalises_through_align(tmp_path):
    src = FIXTURES / "aligned" / "tom_hanks_aligned_112.png"
    (tmp_path / "tom").mkdir()
    (tmp_path / "tom" / "a.png").write_bytes(src.read_bytes())
    ds = data.open_dataset(tmp_path, augment=False)
    assert isinstance(ds, data.ImageFolderDataset) and ds.num_classes == 1
    x, label = ds[0]
    assert label == 0 and tuple(x.shape) == (3, 112, 112)
    np.testing.assert_array_equal(x.numpy(), normalize(cv2.imread(str(src)), "NCHW")[0])


def test_augmentation_follows_the_recipe_probabilities():
    crop = data.FaceAligner()(cv2.imread(str(PEOPLE / "obama" / "obama_1.jpg")))  # in colour
    flipped = crop[:, ::-1].astype(np.float32)
    trials = 600
    flips = greys = 0
    for seed in range(trials):
        out = data.augment(crop, np.random.default_rng(seed))
        assert out.shape == crop.shape and out.dtype == np.uint8
        o = out.astype(np.float32)
        # A face is not symmetric: a flipped sample stays nearer the mirror image.
        flips += np.abs(o - flipped).mean() < np.abs(o - crop).mean()
        greys += np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1],
                                                                            out[..., 2])
    # Binomial bounds of about 4 standard deviations: flip p=0.5 (sd 12), grey p=0.1 (sd 7).
    assert abs(flips - 0.5 * trials) < 50
    assert abs(greys - 0.1 * trials) < 30
    # Same (seed, epoch, index): same sample; another epoch: a different draw.
    a = data.augment(crop, np.random.default_rng([1, 0, 5]))
    assert np.array_equal(a, data.augment(crop, np.random.default_rng([1, 0, 5])))
    assert any(not np.array_equal(data.augment(crop, np.random.default_rng([1, e, 5])), a)
               for e in range(1, 6))


def test_loader_shards_ranks_and_skips_seen_batches(tmp_path, jpegs):
    data.write_records(tmp_path, [(i % 2, jpegs[i % 4]) for i in range(16)])
    ds = data.RecordDataset(tmp_path, augment=False)
    loaders = [data.make_loader(ds, 2, rank, 2, seed=3, num_workers=0, pin_memory=False)
               for rank in (0, 1)]
    for loader in loaders:
        data.set_epoch(loader, 4)
    order = [list(loader.sampler) for loader in loaders]
    assert not set(order[0]) & set(order[1]) and len(order[0]) == len(order[1]) == 8
    data.set_epoch(loaders[0], 4, skip_batches=3)
    assert list(loaders[0].sampler) == order[0][6:]
    assert len(loaders[0]) == 1


def test_image_folder_aligns_raw_photos_on_the_fly():
    ds = data.ImageFolderDataset(PEOPLE, augment=False, align=True)
    assert ds.num_classes == 6
    i = [p.name for p in ds.paths].index("obama_2.jpg")
    crop, label = ds.load(i)
    assert crop.shape == (112, 112, 3) and ds.classes[label] == "obama"
    faces = YuNetDetector(input_width=0).detect(crop)
    assert faces and np.abs(faces[0].landmarks[:2] - TEMPLATE[:2]).max() < 6
