"""Gallery speed: match latency for 1k / 10k / 100k embeddings, plus load, refresh and enrol.

    python benchmarks/gallery_match.py                  # 1 BLAS thread, sizes 1k 10k 100k
    python benchmarks/gallery_match.py --threads 4 --sizes 10000 --json out.json

Each size is a fresh gallery of random unit vectors (512-d, 4 per person: 10k = 2,500
people) written straight into the file's tables, so building a 100k gallery takes seconds;
what is timed goes through the public Gallery API. Prints a Markdown table with the machine.
"""

from __future__ import annotations

import argparse
import os
import sys

# BLAS reads its thread count when numpy loads: set it from the command line first.
_args = argparse.ArgumentParser(add_help=False)
_args.add_argument("--threads", type=int, default=1)
_threads = str(_args.parse_known_args()[0].threads)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _threads

import json  # noqa: E402
import platform  # noqa: E402
import sqlite3  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edgeface_cam.gallery import Gallery  # noqa: E402

FP = "bench" * 8
DIM = 512
PER_PERSON = 4


def build(path: Path, n: int, rng: np.random.Generator) -> np.ndarray:
    Gallery(path, FP).close()  # the schema
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    people = (n + PER_PERSON - 1) // PER_PERSON
    with sqlite3.connect(path) as c:
        c.executemany("INSERT INTO people(id, name, created_at) VALUES (?, ?, 'bench')",
                      [(p + 1, f"person {p}") for p in range(people)])
        c.executemany("INSERT INTO embeddings(person_id, vector, dim, model_fingerprint, "
                      "created_at) VALUES (?, ?, ?, ?, 'bench')",
                      [(i // PER_PERSON + 1, vecs[i].tobytes(), DIM, FP) for i in range(n)])
    return vecs


def timed(fn, repeat: int) -> np.ndarray:
    out = np.empty(repeat)
    for i in range(repeat):
        t = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t
    return out * 1e3  # ms


def bench(n: int, repeat: int, folder: Path) -> dict:
    rng = np.random.default_rng(n)
    path = folder / f"gallery_{n}.db"
    vecs = build(path, n, rng)
    t = time.perf_counter()
    g = Gallery(path, FP)
    load_ms = (time.perf_counter() - t) * 1e3
    noise = rng.standard_normal(DIM) / np.sqrt(DIM)
    probe = (vecs[n // 3] + 0.5 * noise).astype(np.float32)  # an embedding, as the model gives
    assert g.match(probe).name == f"person {n // 3 // PER_PERSON}"  # a real answer is timed
    for _ in range(10):
        g.match(probe)  # warm-up
    match = timed(lambda: g.match(probe), repeat)
    bare = timed(lambda: vecs @ probe, repeat)  # the floor: one BLAS matvec over the same data
    batch = np.stack([probe] * 8)
    many = timed(lambda: g.match_many(batch), max(10, repeat // 4))
    refresh = timed(g.refresh, repeat)  # nothing changed: the per-frame cost
    crops = [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(5)]
    k = iter(range(10**9))
    enrol = timed(lambda: g.enroll(f"new {next(k)}", rng.standard_normal((5, DIM)), crops=crops),
                  5)
    g.close()
    return {"embeddings": n, "people": (n + PER_PERSON - 1) // PER_PERSON,
            "load_ms": round(load_ms, 1),
            "match_median_ms": round(float(np.median(match)), 3),
            "match_p90_ms": round(float(np.percentile(match, 90)), 3),
            "bare_matvec_median_ms": round(float(np.median(bare)), 3),
            "match_many8_median_ms": round(float(np.median(many)), 3),
            "refresh_median_ms": round(float(np.median(refresh)), 4),
            "enrol5_median_ms": round(float(np.median(enrol)), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--repeat", type=int, default=200, help="match calls timed per size")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (set before numpy)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench(n, args.repeat, Path(tmp)) for n in args.sizes]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Gallery match, {platform.machine()} {platform.processor() or ''} "
          f"({os.cpu_count()} cores), {args.threads} BLAS thread(s), numpy {np.__version__}, "
          f"SQLite {sqlite3.sqlite_version}, load average {load:.1f}, {when}\n")
    print("| embeddings | people | load ms | match median ms | match p90 ms | "
          "bare matvec ms | match_many(8) ms | refresh ms | enrol 5 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['embeddings']:,} | {r['people']:,} | {r['load_ms']} | "
              f"{r['match_median_ms']} | {r['match_p90_ms']} | {r['bare_matvec_median_ms']} | "
              f"{r['match_many8_median_ms']} | "
              f"{r['refresh_median_ms']} | {r['enrol5_median_ms']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "date": when,
                                               "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
