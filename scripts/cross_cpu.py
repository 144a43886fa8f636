"""Cross-CPU agreement: the device half's numbers on the fixture photos, written and compared.

``dump`` (run with the venv under test, on any CPU) detects, aligns and embeds every face of the
fixture people and scenes, enrols one photo of each person through the CLI and identifies the rest
(checking the fixture facts: each person's other photos name that person, the two-person scenes
name both, the group of strangers is six unknowns), and writes all of it to JSON.

``compare REF OTHER`` matches the faces of two dumps (same image, nearest box) and checks the bound
for results on two CPUs: the same names, embedding cosine >= 0.999 on average and >= 0.995 for every
face, identify scores within 0.02. (Every face >= 0.999 does not hold: LiteRT's int8 kernels round
differently on ARM's NEON and x86's AVX; measured on emulated Cortex-A72/A76, see BENCHMARKS.md.)
It prints one line (cosine min/mean, box/landmark pixel differences, score differences) and exits
1 when the bound is broken.

    python scripts/cross_cpu.py dump --shared ../shared --out x86.json
    python scripts/cross_cpu.py compare x86.json arm64.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

MIN_MEAN_COSINE = 0.999
MIN_COSINE = 0.995
MAX_SCORE_DIFF = 0.02
# One enrolment photo per person (the first); every other photo of theirs must name them.
PEOPLE_NAMES = {"obama": "Barack Obama", "biden": "Joe Biden", "alex_lacamoire": "Alex Lacamoire",
                "kit_harington": "Kit Harington", "rose_leslie": "Rose Leslie",
                "lin_manuel_miranda": "Lin-Manuel Miranda"}
# What the fixtures' README says each scene shows (names that must be found among its faces).
SCENE_NAMES = {"obama_biden_1.jpg": ["Barack Obama", "Joe Biden"],
               "obama_biden_2.jpg": ["Barack Obama", "Joe Biden"],
               "kit_harington_rose_leslie.jpg": ["Kit Harington", "Rose Leslie"],
               "group_6_faces.jpg": [], "multiface.jpg": []}
PACKAGES = ("numpy", "opencv-python", "ai-edge-litert")


def photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"})


def faces_of(images: list[Path]) -> dict[str, list[dict]]:
    """Every face of every image: box, landmarks, detector score and embedding."""
    import cv2

    from edgeface_cam.detect import make_detector
    from edgeface_cam.embed import Embedder
    from edgeface_cam.recognize import Recognizer

    rec = Recognizer(make_detector("yunet"), Embedder(num_threads=1))
    out = {}
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        out[path.name] = [{"box": [round(float(v), 3) for v in r.face.box],
                           "landmarks": [[round(float(v), 3) for v in p] for p in r.face.landmarks],
                           "score": round(float(r.face.score), 5),
                           "embedding": [round(float(v), 6) for v in r.embedding]}
                          for r in rec.analyze(image)]
    return out


def cli_json(*args: str) -> list | dict:
    from edgeface_cam.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(list(args))
    if code != 0:
        raise SystemExit(f"cross_cpu: edgeface-cam {' '.join(args[:2])} ... exited {code}")
    return json.loads(buf.getvalue())


def identify(people: Path, scenes: Path) -> tuple[dict[str, list[dict]], list[str]]:
    """Enrol each person's first photo, identify everything else; (results, broken facts)."""
    results, broken = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "gallery.db")
        with contextlib.redirect_stdout(io.StringIO()):
            from edgeface_cam.cli import main
            for folder, name in PEOPLE_NAMES.items():
                if main(["enroll", "--name", name, "--images",
                         str(photos(people / folder)[0]), "--db", db]) != 0:
                    broken.append(f"enrolling {name} failed")
        portraits = {str(p): [PEOPLE_NAMES[folder]] for folder in PEOPLE_NAMES
                     for p in photos(people / folder)[1:]}
        expected = {**portraits, **{str(scenes / k): v for k, v in SCENE_NAMES.items()}}
        for r in cli_json("identify", *expected, "--json", "--db", db):
            results[Path(r["image"]).name] = [{"name": f["name"], "score": round(f["score"], 5),
                                               "box": f["box"]} for f in r["faces"]]
            names, want = [f["name"] for f in r["faces"]], expected[r["image"]]
            if r["image"] in portraits:
                ok = bool(names) and names[0] == want[0]  # the largest face is the person
            else:
                ok = sorted(n for n in names if n) == sorted(want)
            if not ok:
                broken.append(f"{Path(r['image']).name}: {names} (expected {want})")
    return results, broken


def dump(args: argparse.Namespace) -> int:
    fixtures = Path(args.shared) / "fixtures"
    people, scenes = fixtures / "people", fixtures / "scenes"
    t0 = time.perf_counter()
    images = [p for folder in PEOPLE_NAMES for p in photos(people / folder)] + \
        [scenes / k for k in SCENE_NAMES]
    data = {"machine": platform.machine(), "python": platform.python_version(),
            "versions": {p: version(p) for p in PACKAGES}, "faces": faces_of(images)}
    data["identify"], broken = identify(people, scenes)
    data["broken_facts"] = broken
    data["seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps(data, indent=1))
    n = sum(len(v) for v in data["faces"].values())
    print(f"cross_cpu dump: {len(images)} images, {n} faces, {data['seconds']} s -> {args.out}")
    for b in broken:
        print(f"cross_cpu: fixture fact broken: {b}", file=sys.stderr)
    return 1 if broken else 0


def center(box: list[float]) -> tuple[float, float]:
    return box[0] + box[2] / 2, box[1] + box[3] / 2


def pair(ref: list[dict], other: list[dict]) -> tuple[list[tuple[dict, dict]], int]:
    """Each reference face with the other side's face of the nearest box centre (within half
    the box), and how many faces of either side found no partner."""
    pairs, used = [], set()
    for a in ref:
        ax, ay = center(a["box"])
        best = min((j for j in range(len(other)) if j not in used), default=None,
                   key=lambda j: abs(center(other[j]["box"])[0] - ax) +
                   abs(center(other[j]["box"])[1] - ay))
        if best is None:
            continue
        bx, by = center(other[best]["box"])
        if max(abs(bx - ax), abs(by - ay)) <= max(a["box"][2], a["box"][3]) / 2:
            pairs.append((a, other[best]))
            used.add(best)
    return pairs, len(ref) + len(other) - 2 * len(pairs)


def compare(args: argparse.Namespace) -> int:
    ref, other = (json.loads(Path(p).read_text()) for p in (args.ref, args.other))
    cosines, box_d, lm_d, score_d, problems, unpaired = [], [], [], [], [], 0
    for image, faces in ref["faces"].items():
        pairs, lone = pair(faces, other["faces"].get(image, []))
        unpaired += lone
        for a, b in pairs:
            cosines.append(sum(x * y for x, y in zip(a["embedding"], b["embedding"], strict=True)))
            box_d.append(max(abs(x - y) for x, y in zip(a["box"], b["box"], strict=True)))
            lm_d.append(max(abs(x - y) for p, q in zip(a["landmarks"], b["landmarks"], strict=True)
                            for x, y in zip(p, q, strict=True)))
    for image, faces in ref["identify"].items():
        pairs, lone = pair(faces, other["identify"].get(image, []))
        if lone and any(f["name"] for f in faces + other["identify"].get(image, [])):
            problems.append(f"{image}: {lone} face(s) unpaired")
        for a, b in pairs:
            if a["name"] != b["name"]:
                problems.append(f"{image}: {a['name']} vs {b['name']}")
            score_d.append(abs(a["score"] - b["score"]))
    if not cosines:
        problems.append("no face in common")
    elif min(cosines) < args.min_cosine:
        problems.append(f"cosine {min(cosines):.5f} < {args.min_cosine}")
    if cosines and sum(cosines) / len(cosines) < args.min_mean_cosine:
        problems.append(f"mean cosine {sum(cosines) / len(cosines):.5f} < {args.min_mean_cosine}")
    if score_d and max(score_d) > args.max_score_diff:
        problems.append(f"score difference {max(score_d):.4f} > {args.max_score_diff}")
    problems += [f"{other['machine']}: {b}" for b in other.get("broken_facts", [])]
    stack = ", ".join(f"{k} {v}" for k, v in other["versions"].items())
    mean = sum(cosines) / max(len(cosines), 1)
    line = (f"{other['machine']} vs {ref['machine']} ({stack}): "
            f"{len(cosines)} faces, cosine min {min(cosines, default=0):.5f} "
            f"mean {mean:.5f}; box max {max(box_d, default=0):.2f} px, "
            f"landmarks max {max(lm_d, default=0):.2f} px; {len(score_d)} identify scores, max "
            f"diff {max(score_d, default=0):.4f}; {unpaired} unpaired detections")
    if problems:
        line += "; BROKEN: " + "; ".join(problems)
    print(line)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump", help="write this CPU's results as JSON")
    d.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    d.add_argument("--out", required=True)
    c = sub.add_parser("compare", help="check two dumps agree within the bound")
    c.add_argument("ref")
    c.add_argument("other")
    c.add_argument("--min-cosine", type=float, default=MIN_COSINE, help="every face")
    c.add_argument("--min-mean-cosine", type=float, default=MIN_MEAN_COSINE)
    c.add_argument("--max-score-diff", type=float, default=MAX_SCORE_DIFF)
    args = parser.parse_args(argv)
    return dump(args) if args.command == "dump" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
