"""The face library's figures: storing a sighting, grouping a new unknown, a full regrouping of
10,000 sightings against scipy / scikit-learn, grouping quality (BCubed) on CelebA identities,
and the service's RSS with 10,000 sightings stored.

    python benchmarks/library.py                      # everything, Markdown on stdout
    python benchmarks/library.py --cache /tmp/emb.npz # keep the CelebA embeddings between runs
    python benchmarks/library.py --no-peers           # without scipy / scikit-learn

Faces: celeba-subset (299 identities, in-the-wild photos) and celeba-10k (5,429 identities,
tight crops padded by 40 px as enrol does) from ../shared/datasets, embedded once through the
device path (detector, alignment, the shipped model). 1 BLAS thread, as on the service.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections import Counter  # noqa: E402
from datetime import datetime, timedelta, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from edgeface_cam.gallery import Gallery, Retention, SightingRecorder  # noqa: E402
from edgeface_cam.gallery.groups import JOIN, Groups, regroup  # noqa: E402
from edgeface_cam.gallery.sightings import _Job, iso  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets"
FP = "bench" * 8


def embed_sets(cache: Path | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{set: (unit embeddings, identity labels)} for celeba-subset and celeba-10k."""
    if cache is not None and cache.exists():
        z = np.load(cache)
        return {k: (z[f"{k}_emb"], z[f"{k}_label"]) for k in ("subset", "c10k")}
    from edgeface_cam import config
    from edgeface_cam.app import App
    from edgeface_cam.enroll import dominant_face
    app = App(config.from_dict({}))

    def run(items: list[tuple[Path, str]], pad: int) -> tuple[np.ndarray, np.ndarray]:
        embs, labels = [], []
        for path, label in items:
            im = cv2.imread(str(path))
            if pad:
                im = cv2.copyMakeBorder(im, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            f = dominant_face(app.recognizer.analyze(im, still=True))
            if f is not None:
                embs.append(f.embedding)
                labels.append(label)
        return np.array(embs, np.float32), np.array(labels)

    sub = sorted((p, p.parent.name) for p in (DATA / "celeba-subset").glob("*/*.jpg"))
    with open(DATA / "celeba-10k-identities.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    out = {"subset": run(sub, 0),
           "c10k": run([(DATA / "celeba-10k" / r["image"], r["identity"]) for r in rows], 40)}
    if cache is not None:
        np.savez(cache, **{f"{k}_{n}": v for k, (e, lab) in out.items()
                           for n, v in (("emb", e), ("label", lab))})
    return out


def bcubed(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    pairs = list(zip(found.tolist(), truth.tolist(), strict=True))
    both, groups, people = Counter(pairs), Counter(found.tolist()), Counter(truth.tolist())
    return (sum(both[p] / groups[p[0]] for p in pairs) / len(pairs),
            sum(both[p] / people[p[1]] for p in pairs) / len(pairs))


def measured(fn):
    """(result, seconds, peak traced MB): timed untraced, then run again under tracemalloc
    (numpy reports its arrays to it) for the peak."""
    t0 = time.perf_counter()
    out = fn()
    took = time.perf_counter() - t0
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, took, peak


def grouping_rows(sets: dict, peers: bool) -> list[str]:
    rows = []
    for name, (emb, lab) in sets.items():
        order = np.random.default_rng(0).permutation(len(emb))
        emb, lab = emb[order], lab[order]
        (labels, _), took, peak = measured(lambda e=emb: regroup(e))
        p, r = bcubed(labels, lab)
        rows.append(f"| {name} ({len(emb)} faces, {len(set(lab))} people) | this module "
                    f"(average linkage, incremental, {JOIN}) | {len(set(labels))} | {p:.3f} | "
                    f"{r:.3f} | {took:.2f} s | {peak:.0f} MB |")
        if not peers:
            continue
        from scipy.cluster.hierarchy import fcluster, linkage
        from sklearn.cluster import AgglomerativeClustering

        def scipy_avg(e=emb):
            return fcluster(linkage(e.astype(np.float64), "average", metric="cosine"),
                            1 - JOIN, "distance")

        def sklearn_avg(e=emb):
            return AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                           distance_threshold=1 - JOIN).fit_predict(e)

        for label, fn in (("scipy linkage(average)", scipy_avg),
                          ("scikit-learn AgglomerativeClustering(average)", sklearn_avg)):
            found, took, peak = measured(fn)
            p, r = bcubed(np.asarray(found), lab)
            rows.append(f"| {name} | {label}, same cut | {len(set(found))} | {p:.3f} | {r:.3f} "
                        f"| {took:.2f} s | {peak:.0f} MB |")
    return rows


def ten_thousand(sets: dict) -> np.ndarray:
    """10,000 real faces: all of celeba-10k's, then celeba-subset's."""
    return np.concatenate([sets["c10k"][0], sets["subset"][0]])[:10_000]


def placement_row(faces: np.ndarray) -> str:
    """Grouping one new unknown with 10,000 stored (real faces, their real groups)."""
    labels, _ = regroup(faces[:9_800])
    g = Groups.build(zip(labels.tolist(), faces[:9_800], strict=True), dim=faces.shape[1])
    ids = iter(range(10**6, 2 * 10**6))
    took = []
    for x in faces[9_800:]:
        t0 = time.perf_counter()
        g.place(x, lambda: next(ids))
        took.append(time.perf_counter() - t0)
    return (f"| grouping a new unknown, 9,800 stored in {len(g)} groups | "
            f"{np.median(took) * 1e3:.3f} ms median, {np.percentile(took, 99) * 1e3:.3f} ms p99 |")


def sample_crop() -> np.ndarray:
    """A real face photo at the aligned crop's size (what the JPEG encoder sees)."""
    photo = sorted((DATA / "celeba-subset").glob("*/*.jpg"))[0]
    return cv2.resize(cv2.imread(str(photo)), (112, 112))


def filled_gallery(path: Path, faces: np.ndarray) -> SightingRecorder:
    """A gallery holding 10,000 sightings (each with a 112x112 crop JPEG), recorded through
    the recorder as the service does; the recorder left open."""
    Gallery(path, FP).close()
    rec = SightingRecorder(path, FP, Retention(10_000, 3650))
    crop = sample_crop()
    start = datetime.now(timezone.utc) - timedelta(days=1)
    for k, v in enumerate(faces):
        rec.record(SimpleNamespace(id=k, decided_name=None, score=0.1, best_quality=0.6,
                                   best_embedding=v, best_crop=crop, best_file=None),
                   "cam", start + timedelta(seconds=k), {"frame": k})
        if k % 500 == 0:
            rec.flush()
    rec.flush(120)
    return rec


def storing_rows(faces: np.ndarray) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.db"
        t0 = time.perf_counter()
        rec = filled_gallery(path, faces)
        fill = time.perf_counter() - t0
        crop = sample_crop()
        calls, writes = [], []
        for k, v in enumerate(faces[:300]):
            tr = SimpleNamespace(id=k, decided_name=None, score=0.1, best_quality=0.6,
                                 best_embedding=v, best_crop=crop, best_file=None)
            t0 = time.perf_counter()
            rec.record(tr, "cam", datetime.now(timezone.utc), {"frame": k})
            calls.append(time.perf_counter() - t0)
        rec.flush(60)
        # The writer's cost for one sighting: its transaction (crop JPEG, group row, sighting
        # row, commit) for a single queued row, called here while the writer thread is idle.
        for k, v in enumerate(faces[300:600]):
            with rec._lock:
                sid = rec._ids.take()
                placed = rec._groups.place(v, rec._gids.take)
            job = _Job({"id": sid, "time": iso(datetime.now(timezone.utc)), "source": "cam",
                        "frame": k, "file": None, "track_id": k, "score": 0.1, "quality": 0.6,
                        "crop": crop, "snapshot": None, "status": "unknown", "person_id": None,
                        "group_id": placed.group, "vector": v.tobytes(), "dim": v.shape[0],
                        "model_fingerprint": FP}, placed.group if placed.new else None,
                       placed.merged)
            t0 = time.perf_counter()
            rec._write([job])
            writes.append(time.perf_counter() - t0)
        rec.close()
        size = path.stat().st_size / 2**20
        rss = service_rss(path)
    return [f"| storing a sighting, 10,000 stored: the frame loop's record() (id, grouping, "
            f"queue) | {np.median(calls) * 1e3:.3f} ms median, "
            f"{np.percentile(calls, 99) * 1e3:.3f} ms p99 |",
            f"| storing a sighting, 10,000 stored: the writer thread's transaction for one row "
            f"(crop JPEG, group, row, commit) | {np.median(writes) * 1e3:.2f} ms median, "
            f"{np.percentile(writes, 90) * 1e3:.2f} ms p90 |",
            f"| filling 10,000 sightings through the recorder | {fill:.1f} s; file {size:.0f} MB "
            "|",
            f"| service peak RSS (`run` on the demo clip, 200 frames, sightings on), gallery "
            f"with 10,000 sightings | {rss[0]:.0f} MB (empty gallery: {rss[1]:.0f} MB) |"]


def service_rss(path: Path) -> tuple[float, float]:
    """Peak RSS of `edgeface-cam run` on the demo clip with this gallery, and with an empty one
    (the difference is what 10,000 sightings cost in memory: crops stay on disk)."""
    from edgeface_cam.demo import DEMO_CLIP
    # VmHWM: this process's peak RSS (ru_maxrss would carry the benchmark's own over exec).
    code = ("import re, sys; from edgeface_cam.cli import main; rc = main(sys.argv[1:]); "
            "print(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read())[1], "
            "file=sys.stderr)")
    out = []
    for db in (path, path.with_name("empty.db")):
        done = subprocess.run([sys.executable, "-c", code, "run", "--source", str(DEMO_CLIP),
                               "--db", str(db), "--max-frames", "200", "--no-preview",
                               "--events", os.devnull, "--set", "web.enabled=false"],
                              cwd=ROOT, check=True, capture_output=True, text=True)
        out.append(int(done.stderr.strip().splitlines()[-1]) / 1024)
    return out[0], out[1]


def fps_rows(rounds: int) -> list[str]:
    """`edgeface-cam bench` (demo clip, 200 frames, every frame processed) with sightings on
    and off, alternating so that a change in the machine's load hits both alike."""
    fps: dict[str, list[float]] = {"true": [], "false": []}
    for _ in range(rounds):
        for on in fps:
            done = subprocess.run([sys.executable, "-m", "edgeface_cam", "bench", "--json",
                                   "--set", f"sightings.enabled={on}", "--set",
                                   "web.enabled=false"], cwd=ROOT, check=True,
                                  capture_output=True, text=True)
            fps[on].append(json.loads(done.stdout)["fps"])
    return [f"| pipeline fps (`bench`, demo clip), sightings {'on' if on == 'true' else 'off'} "
            f"| median {np.median(v):.1f} fps ({', '.join(f'{x:.1f}' for x in v)}) |"
            for on, v in fps.items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, help="npz of the CelebA embeddings (made if missing)")
    ap.add_argument("--no-peers", action="store_true", help="skip scipy and scikit-learn")
    ap.add_argument("--fps-rounds", type=int, default=5,
                    help="bench runs with sightings on and off, alternating (0: skip)")
    ap.add_argument("--only-fps", action="store_true", help="just the fps comparison")
    args = ap.parse_args()
    if args.only_fps:
        print("\n".join(fps_rows(args.fps_rounds)))
        return 0
    sets = embed_sets(args.cache)
    faces = ten_thousand(sets)
    sets["10,000 (celeba-10k + celeba-subset)"] = (faces, np.concatenate(
        [sets["c10k"][1], np.char.add("s", sets["subset"][1])])[:10_000])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, numpy {np.__version__}; 1 BLAS thread\n")
    print("| set | method | groups | BCubed P | BCubed R | time | peak memory |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in grouping_rows(sets, peers=not args.no_peers):
        print(row, flush=True)
    print("\n| what | figure |\n| --- | --- |")
    print(placement_row(faces), flush=True)
    for row in storing_rows(faces):
        print(row, flush=True)
    for row in fps_rows(args.fps_rounds):
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
