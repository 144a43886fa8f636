"""Verification maths, pair-file readers and the evaluate CLI, on real fixture/dataset photos."""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface_cam.detect import Face
from edgeface_cam.embed import l2_normalize
from tests.conftest import ASSETS, DATASETS, FIXTURES, PEOPLE, SCENES
from training import evaluate as E
from training import verification as V
from training.common import MainFace, open_detector
from training.evaluation import EvalError
from training.evaluation.pairsets import read_bin, read_lfw, write_bin
from training.evaluation.scoring import impostor_pairs

XS_TFLITE = ASSETS / "edgeface_xs.tflite"
needs_xs = pytest.mark.skipif(
    not (XS_TFLITE.is_file() and XS_TFLITE.with_suffix(".json").is_file()),
    reason="assets/edgeface_xs.tflite (+ .json card) not exported yet (training.export makes it)")
LAST_LINE = re.compile(r"^accuracy=(0\.\d{4}|1\.0000) std=(0\.\d{4})$")


# ------------------------------------------------------------------------ verification maths


def _oracle_and_random(seed: int, n_ids: int = 200, per_id: int = 4, dim: int = 64):
    """Identities, then pairs: 600 same + 600 different, drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n_ids), per_id)
    pairs, same = [], []
    while sum(same) < 600:
        i = rng.integers(n_ids)
        a, b = rng.choice(per_id, 2, replace=False)
        pairs.append((i * per_id + a, i * per_id + b))
        same.append(True)
    while len(same) < 1200:
        a, b = rng.integers(len(ids), size=2)
        if ids[a] != ids[b]:
            pairs.append((a, b))
            same.append(False)
    centres = l2_normalize(rng.normal(size=(n_ids, dim)))
    oracle = l2_normalize(centres[ids] + 0.05 * rng.normal(size=(len(ids), dim)))
    random = l2_normalize(rng.normal(size=(len(ids), dim)))
    return np.array(pairs), np.array(same), oracle, random


def _cos(emb: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    return (emb[pairs[:, 0]] * emb[pairs[:, 1]]).sum(1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ten_fold_oracle_perfect_random_chance(seed: int) -> None:
    pairs, same, oracle, random = _oracle_and_random(seed)
    good = V.kfold_accuracy(_cos(oracle, pairs), same)
    assert good.mean == 1.0 and good.std == 0.0
    assert len(good.accuracies) == 10
    chance = V.kfold_accuracy(_cos(random, pairs), same)
    assert 0.35 <= chance.mean <= 0.65


def test_best_threshold_by_hand() -> None:
    # Sorted: 0.9 S, 0.8 S, 0.7 D, 0.6 S, 0.5 S, 0.2 D, 0.1 D: the one best cut lies between
    # 0.5 and 0.2 (6 of 7 right; cutting below 0.8 gets 5).
    scores = [0.9, 0.2, 0.7, 0.8, 0.1, 0.6, 0.5]
    same = [1, 0, 0, 1, 0, 1, 1]
    thr, acc = V.best_threshold(scores, same)
    assert acc == pytest.approx(6 / 7)
    assert 0.2 < thr < 0.5


def test_stratified_folds_hold_both_classes() -> None:
    same = np.r_[np.ones(1000, bool), np.zeros(1000, bool)]  # same-first, like pairs.tsv files
    folds = V.stratified_folds(same)
    for f in range(10):
        assert same[folds == f].sum() == 100 and (~same[folds == f]).sum() == 100


def test_threshold_at_far_gives_requested_far() -> None:
    rng = np.random.default_rng(7)
    neg = rng.normal(size=200_000)
    pos = rng.normal(3.0, 1.0, size=5000)
    scores = np.r_[pos, neg]
    same = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    for far, z in ((1e-2, 2.3263), (1e-3, 3.0902)):  # standard normal upper quantiles
        thr = V.threshold_at_far(scores, same, far)
        measured = (neg >= thr).mean()
        assert far * 0.999 <= measured <= far  # as close as the sample allows, never above
        assert abs(thr - z) < 0.08  # and where the distribution says it should be
        tar, thr2 = V.tar_at_far(scores, same, far)
        assert thr2 == thr and tar == pytest.approx((pos >= thr).mean())
    fresh = rng.normal(size=200_000)  # the threshold generalises to new impostors
    assert 0.8e-3 < (fresh >= V.threshold_at_far(scores, same, 1e-3)).mean() < 1.2e-3
    assert V.far_resolved(200_000, 1e-4) and not V.far_resolved(3000, 1e-4)


def test_roc_is_monotone_and_complete(tmp_path: Path) -> None:
    pairs, same, _, random = _oracle_and_random(3)
    far, tar, thr = V.roc(_cos(random, pairs), same)
    assert far[0] == 0 and tar[0] == 0 and far[-1] == 1 and tar[-1] == 1
    assert (np.diff(far) >= 0).all() and (np.diff(tar) >= 0).all() and (np.diff(thr) < 0).all()
    png = V.save_roc_png({"random": (far, tar)}, tmp_path / "roc.png")
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 100


# ----------------------------------------------------------------------- pair-file readers


def test_bin_round_trip(tmp_path: Path) -> None:
    crop = cv2.imread(str(FIXTURES / "aligned" / "tom_hanks_aligned_112.png"))
    crops = [crop, crop[:, ::-1], crop, np.ascontiguousarray(crop[::-1])]
    path = write_bin(tmp_path / "t.bin", crops, [True, False], ext=".png")
    ps = read_bin(path)
    assert ps.aligned and ps.issame.tolist() == [True, False]
    assert ps.pairs.tolist() == [[0, 1], [2, 3]]
    for k, c in zip(ps.keys, crops, strict=True):
        assert np.array_equal(ps.load(k), c)  # PNG is lossless


def test_bin_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(EvalError, match=r"not an insightface \.bin"):
        read_bin(bad)


PEOPLE_PHOTOS = {
    "Alex_Lacamoire": sorted((PEOPLE / "alex_lacamoire").iterdir()),
    "Barack_Obama": sorted((PEOPLE / "obama").iterdir()),
    "Joe_Biden": sorted((PEOPLE / "biden").iterdir()),
    "Kit_Harington": sorted((PEOPLE / "kit_harington").iterdir()),
    "Rose_Leslie": sorted((PEOPLE / "rose_leslie").iterdir()),
}


def make_lfw(root: Path, with_blank: bool = True) -> Path:
    """A tiny LFW-layout folder from the fixture photos: 2 folds x (6 same + 6 different)."""
    for name, files in PEOPLE_PHOTOS.items():
        (root / name).mkdir(parents=True)
        for i, f in enumerate(files, start=1):
            cv2.imwrite(str(root / name / f"{name}_{i:04d}.jpg"), cv2.imread(str(f)))
    if with_blank:  # an image with no face: counted and rejected, never a crash
        (root / "No_Face").mkdir()
        blank = np.full((200, 200, 3), 128, np.uint8)
        cv2.imwrite(str(root / "No_Face" / "No_Face_0001.jpg"), blank)
    same = [(n, a, b) for n, fs in PEOPLE_PHOTOS.items()
            for a, b in combinations(range(1, len(fs) + 1), 2)]
    same = [same[i] for i in (0, 1, 3, 5, 6, 7, 8, 9, 10, 12, 16, 17)]  # 12 of the 18
    names = list(PEOPLE_PHOTOS)
    diff = [(names[i], 1, names[(i + 1) % 5], 2) for i in range(5)]
    diff += [(names[i], 2, names[(i + 2) % 5], 1) for i in range(5)]
    diff += [("Barack_Obama", 3, "Kit_Harington", 3)]
    diff += [("No_Face", 1, "Barack_Obama", 1)] if with_blank else [("Rose_Leslie", 2,
                                                                      "Joe_Biden", 2)]
    lines = ["2\t6"]
    for f in range(2):
        lines += [f"{n}\t{a}\t{b}" for n, a, b in same[6 * f:6 * f + 6]]
        lines += [f"{n1}\t{a}\t{n2}\t{b}" for n1, a, n2, b in diff[6 * f:6 * f + 6]]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


def test_lfw_reader(tmp_path: Path) -> None:
    ps = read_lfw(make_lfw(tmp_path / "lfw"))
    assert len(ps.pairs) == 24 and ps.issame.sum() == 12
    assert ps.folds.tolist() == [0] * 12 + [1] * 12
    assert "Barack_Obama/Barack_Obama_0001.jpg" in ps.keys
    img = ps.load("Barack_Obama/Barack_Obama_0001.jpg")
    assert img.ndim == 3 and img.shape[2] == 3
    # identity per image comes from the folder
    assert ps.identities[ps.keys.index("Joe_Biden/Joe_Biden_0002.jpg")] == "Joe_Biden"


def test_lfw_reader_rejects_wrong_counts(tmp_path: Path) -> None:
    root = make_lfw(tmp_path / "lfw")
    (root / "pairs.txt").write_text("10\t300\nBarack_Obama\t1\t2\n")
    with pytest.raises(EvalError, match="header says"):
        read_lfw(root)


def test_impostor_pairs_are_distinct_identities() -> None:
    ids = [str(i // 3) for i in range(60)]
    p = impostor_pairs(ids, 500, seed=1)
    assert len(p) == 500 and len({tuple(x) for x in p.tolist()}) == 500
    assert all(ids[a] != ids[b] for a, b in p)
    # Asking for more than exist gives them all (3 ids x 2 images: 12 cross pairs), no hang.
    assert len(impostor_pairs(["a", "a", "b", "b", "c", "c"], 100)) == 12


# ------------------------------------------------------------------- end to end (real model)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = E.main([*argv, "--quiet"])
    out, err = capsys.readouterr()
    return rc, out, err


@needs_xs
def test_cli_lfw_layout_detector_and_landmarks(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    root = make_lfw(tmp_path / "lfw")
    rc, out, err = run_cli(["--lfw", str(root), "--model", str(XS_TFLITE),
                            "--json", str(tmp_path / "r.json"), "--roc", str(tmp_path / "r.png")],
                           capsys)
    assert rc == 0, err
    last = out.strip().splitlines()[-1]
    m = LAST_LINE.match(last)
    assert m, last
    # Five clearly different people, photos of the same person: a working model separates them.
    assert float(m.group(1)) >= 0.9
    assert "no face in 1 of" in out and "1 pairs touch one" in out
    assert (tmp_path / "r.png").is_file()

    # The same faces given as a landmarks file give the same scores.
    main = MainFace(open_detector("yunet", 0.8))
    lines = []
    for name, files in PEOPLE_PHOTOS.items():
        for i in range(1, len(files) + 1):
            key = f"{name}/{name}_{i:04d}.jpg"
            face = main.find(cv2.imread(str(root / key)))
            lines.append(key + " " + " ".join(f"{v:.3f}" for v in face.landmarks.ravel()))
    (tmp_path / "lm.txt").write_text("\n".join(lines) + "\n")
    rc, out2, err = run_cli(["--lfw", str(root), "--model", str(XS_TFLITE),
                             "--landmarks", str(tmp_path / "lm.txt")], capsys)
    assert rc == 0, err
    assert out2.strip().splitlines()[-1] == last


@needs_xs
def test_cli_celeba_subset_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A few real celeba-subset pairs (in-the-wild photos; faces found by YuNet)."""
    sub = DATASETS / "celeba-subset"
    folders = sorted(p for p in sub.iterdir() if p.is_dir())[:20]
    rows = ["image_a\timage_b\tsame"]
    for i, d in enumerate(folders):
        imgs = sorted(d.glob("*.jpg"))
        other = sorted(folders[(i + 7) % len(folders)].glob("*.jpg"))
        rows.append(f"{d.name}/{imgs[0].name}\t{d.name}/{imgs[1].name}\t1")
        rows.append(f"{d.name}/{imgs[1].name}\t{other[0].parent.name}/{other[0].name}\t0")
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("\n".join(rows) + "\n")
    rc, out, err = run_cli(["--pairs", str(tsv), "--root", str(sub), "--model", str(XS_TFLITE),
                            "--far", "1e-3", "--impostors", "500",
                            "--cache", str(tmp_path / "cache")], capsys)
    assert rc == 0, err
    m = LAST_LINE.match(out.strip().splitlines()[-1])
    assert m and float(m.group(1)) >= 0.75, out
    assert "threshold at FAR=1e-03:" in out
    thr = float(re.search(r"threshold at FAR=1e-03: (\S+)", out).group(1))
    # Checking that threshold on the same pairs gives back a FAR of at most 1e-3.
    rc, out3, _ = run_cli(["--pairs", str(tsv), "--root", str(sub), "--model", str(XS_TFLITE),
                           "--impostors", "500", "--at", str(thr + 1e-4),
                           "--cache", str(tmp_path / "cache")], capsys)
    far = float(re.search(r"at threshold=\S+: TAR=\S+ FAR=(\S+)", out3).group(1))
    assert rc == 0 and far <= 1e-3
    # A second run is served from the cache and prints the same figures.
    rc, out2, _ = run_cli(["--pairs", str(tsv), "--root", str(sub), "--model", str(XS_TFLITE),
                           "--far", "1e-3", "--impostors", "500",
                           "--cache", str(tmp_path / "cache")], capsys)
    assert rc == 0 and out2 == out


def test_cli_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run_cli(["--pairs", str(tmp_path / "nope.tsv"), "--model", "x.tflite"], capsys)
    assert rc == 2 and err.strip().startswith("error: no such pair file")
    assert len(err.strip().splitlines()) == 1
    tsv = tmp_path / "p.tsv"
    tsv.write_text("a.jpg\tb.jpg\tmaybe\n")
    rc, _, err = run_cli(["--pairs", str(tsv), "--model", "x.tflite"], capsys)
    assert rc == 2 and "header lacks" in err


# ------------------------------------------------------------- the LFW protocol: --pick centre

# In each of these scenes the leftmost face is the subject and a larger face, someone else's,
# stands beside it (checked by eye): Obama left of Biden, Biden left of Obama (and a girl), Rose
# Leslie left of Kit Harington.
SCENE_SUBJECTS = {"obama_biden_1.jpg": "Barack_Obama", "obama_biden_2.jpg": "Joe_Biden",
                  "kit_harington_rose_leslie.jpg": "Rose_Leslie"}


def centred_on(image: np.ndarray, subject: Face, bystander: Face) -> np.ndarray:
    """A square window centred on ``subject``'s box that holds ``bystander``'s box too, as LFW's
    pictures are centred on their subject (black where the window passes the photo's edge)."""
    centre = subject.box[:2] + subject.box[2:4] / 2
    corners = np.stack([bystander.box[:2], bystander.box[:2] + bystander.box[2:4]])
    half = int(np.ceil(np.abs(corners - centre).max() + 0.25 * bystander.box[3]))
    x0, y0 = np.round(centre).astype(int) - half
    h, w = image.shape[:2]
    pad = max(0, -x0, -y0, x0 + 2 * half - w, y0 + 2 * half - h)
    big = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    return big[y0 + pad:y0 + pad + 2 * half, x0 + pad:x0 + pad + 2 * half]


def scene_windows() -> dict[str, np.ndarray]:
    """{subject's name: the scene cropped so that the subject is at the centre}."""
    det = open_detector()
    out = {}
    for scene, name in SCENE_SUBJECTS.items():
        image = cv2.imread(str(SCENES / scene))
        faces = det.detect(image)
        subject = min(faces, key=lambda f: float(f.box[0]))
        bystander = max(faces, key=lambda f: float(f.box[2] * f.box[3]))
        assert bystander is not subject, f"{scene}: the subject is the largest face"
        out[name] = centred_on(image, subject, bystander)
    return out


def make_lfw_scenes(root: Path) -> Path:
    """An LFW-layout folder: the fixture people's photos plus, per scene subject, the window
    centred on them as their last picture; every pair but one touches such a window. 2 folds x
    (5 same + 5 different)."""
    make_lfw(root, with_blank=False)
    last = {}
    for name, window in scene_windows().items():
        last[name] = len(PEOPLE_PHOTOS[name]) + 1
        cv2.imwrite(str(root / name / f"{name}_{last[name]:04d}.jpg"), window)
    o, b, r = last["Barack_Obama"], last["Joe_Biden"], last["Rose_Leslie"]
    ob, jb, rl, kh = "Barack_Obama", "Joe_Biden", "Rose_Leslie", "Kit_Harington"
    folds = [
        ([(ob, o, 1), (ob, o, 2), (ob, o, 3), (jb, b, 1), (rl, r, 1)],
         [(ob, o, jb, 1), (jb, b, ob, 1), (jb, b, ob, 2), (rl, r, kh, 1), (rl, r, kh, 2)]),
        ([(ob, o, 4), (ob, o, 5), (jb, b, 2), (rl, r, 2), (kh, 1, 2)],
         [(ob, o, jb, 2), (jb, b, ob, 3), (jb, b, ob, 4), (jb, b, ob, 5), (rl, r, kh, 3)]),
    ]
    lines = ["2\t5"]
    for same, diff in folds:
        lines += ["\t".join(map(str, s)) for s in same] + ["\t".join(map(str, d)) for d in diff]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


def holds(face: Face, point: np.ndarray) -> bool:
    return bool(((face.box[:2] <= point) & (point <= face.box[:2] + face.box[2:4])).all())


def test_centre_pick_finds_the_subject_where_largest_finds_a_bystander() -> None:
    det = open_detector()
    centre, largest = MainFace(det, pick="centre"), MainFace(det, pick="largest")
    for name, window in scene_windows().items():
        mid = np.array(window.shape[1::-1], np.float32) / 2
        assert holds(centre.find(window), mid), name
        assert not holds(largest.find(window), mid), name
    with pytest.raises(ValueError, match="centre"):
        MainFace(det, pick="middle")


@needs_xs
def test_cli_pick_on_the_lfw_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--lfw takes the face nearest the centre by default: on pictures centred on their subject
    beside a larger bystander, the largest face costs most of the pairs."""
    root = make_lfw_scenes(tmp_path / "lfw")
    model = ["--model", str(XS_TFLITE)]

    def accuracy(argv: list[str]) -> tuple[float, str]:
        rc, out, err = run_cli([*argv, *model], capsys)
        assert rc == 0, err
        m = LAST_LINE.match(out.strip().splitlines()[-1])
        assert m, out
        return float(m.group(1)), out

    default, out = accuracy(["--lfw", str(root)])
    assert "centre face" in out
    assert accuracy(["--lfw", str(root), "--pick", "centre"])[0] == default
    largest, out = accuracy(["--lfw", str(root), "--pick", "largest"])
    assert "largest face" in out
    assert default >= 0.9, default
    assert largest <= 0.6, largest
    # Other pair sources keep the largest face by default: the same pairs as a TSV.
    ps = read_lfw(root)
    rows = [f"{ps.keys[a]}\t{ps.keys[b]}\t{int(s)}\t{f}"
            for (a, b), s, f in zip(ps.pairs, ps.issame, ps.folds, strict=True)]
    (tmp_path / "pairs.tsv").write_text("image_a\timage_b\tsame\tfold\n" + "\n".join(rows) + "\n")
    assert accuracy(["--pairs", str(tmp_path / "pairs.tsv"), "--root", str(root)])[0] == largest
