"""Build the CelebA verification pair set: ``python benchmarks/make_pairs.py``.

Identities from ``celeba-subset/`` (one folder per CelebA identity) and ``celeba-10k/`` (ids in
``celeba-10k-identities.tsv``; the same CelebA identity numbers) are shuffled with a fixed seed and
dealt into 10 identity-disjoint folds; each fold gets ``--same`` same pairs (identities taken in
turn, so many identities contribute) and ``--different`` pairs of two identities of that fold.
Identities used by the held-out ``celeba-subset/pairs.tsv`` are left out, so a threshold chosen
here can be checked there. Images are never filtered by a detector (that would bias the set).

Output: TSV ``image_a image_b same fold id_a id_b``, paths relative to the datasets folder.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"


def collect(datasets: Path) -> dict[int, list[str]]:
    """CelebA identity -> image paths relative to ``datasets``; an image present in both pools
    (same CelebA file name) is kept once, so no 'same' pair compares a file with itself."""
    by_id: dict[int, list[str]] = defaultdict(list)
    seen: set[str] = set()
    subset = datasets / "celeba-subset"
    if subset.is_dir():
        for d in sorted(p for p in subset.iterdir() if p.is_dir() and p.name.isdigit()):
            for img in sorted(d.glob("*.jpg")):
                if img.name not in seen:
                    seen.add(img.name)
                    by_id[int(d.name)].append(f"celeba-subset/{d.name}/{img.name}")
    table = datasets / "celeba-10k-identities.tsv"
    if table.is_file():
        with open(table, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                name = row["image"]
                if name not in seen and (datasets / "celeba-10k" / name).is_file():
                    seen.add(name)
                    by_id[int(row["identity"])].append(f"celeba-10k/{name}")
    return dict(by_id)


def held_out_identities(pairs_tsv: Path) -> set[int]:
    """Identities (parent folder names) used by a pair file we report as held-out."""
    ids: set[int] = set()
    if not pairs_tsv.is_file():
        return ids
    with open(pairs_tsv, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            for col in ("image_a", "image_b"):
                ids.add(int(Path(row[col]).parent.name))
    return ids


def make_pairs(by_id: dict[int, list[str]], n_same: int, n_diff: int, n_folds: int = 10,
               seed: int = 0) -> list[tuple[str, str, int, int, int, int]]:
    """(image_a, image_b, same, fold, id_a, id_b) rows; folds are identity-disjoint."""
    rng = random.Random(seed)
    ids = sorted(by_id)
    rng.shuffle(ids)
    folds: list[list[int]] = [ids[i::n_folds] for i in range(n_folds)]
    rows = []
    for f, fold_ids in enumerate(folds):
        per_same = n_same // n_folds + (f < n_same % n_folds)
        per_diff = n_diff // n_folds + (f < n_diff % n_folds)
        multi = [i for i in fold_ids if len(by_id[i]) >= 2]
        # Every image pair of every identity, shuffled per identity; then identities take turns,
        # so the set is spread over as many identities as possible.
        queues = {}
        for i in multi:
            imgs = by_id[i]
            cand = [(a, b) for x, a in enumerate(imgs) for b in imgs[x + 1:]]
            rng.shuffle(cand)
            queues[i] = cand
        same: list[tuple[str, str, int]] = []
        while len(same) < per_same and any(queues.values()):
            for i in multi:
                if queues[i] and len(same) < per_same:
                    a, b = queues[i].pop()
                    same.append((a, b, i))
        if len(same) < per_same:
            raise ValueError(f"fold {f}: only {len(same)} same pairs possible, want {per_same}")
        diff: set[tuple[str, str, int, int]] = set()
        tries = 0
        while len(diff) < per_diff:
            tries += 1
            if tries > 100 * per_diff:
                raise ValueError(f"fold {f}: cannot draw {per_diff} different pairs")
            i, j = rng.sample(fold_ids, 2)
            a, b = rng.choice(by_id[i]), rng.choice(by_id[j])
            diff.add((a, b, i, j) if a < b else (b, a, j, i))
        rows += [(a, b, 1, f, i, i) for a, b, i in same]
        rows += [(a, b, 0, f, i, j) for a, b, i, j in sorted(diff)]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=str(DATASETS), help="the shared datasets folder")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "pairs_celeba.tsv"))
    ap.add_argument("--same", type=int, default=3000)
    ap.add_argument("--different", type=int, default=3000)
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exclude-pairs", default="celeba-subset/pairs.tsv",
                    help="leave out the identities of this pair file (relative to --datasets); "
                         "'' keeps them")
    args = ap.parse_args(argv)
    datasets = Path(args.datasets)
    by_id = collect(datasets)
    if not by_id:
        print(f"error: no CelebA images under {datasets}", file=sys.stderr)
        return 2
    excluded = held_out_identities(datasets / args.exclude_pairs) if args.exclude_pairs else set()
    by_id = {i: v for i, v in by_id.items() if i not in excluded}
    try:
        rows = make_pairs(by_id, args.same, args.different, args.folds, args.seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        f.write(f"# CelebA verification pairs: make_pairs.py --seed {args.seed} --same {args.same}"
                f" --different {args.different} --folds {args.folds}; identities of "
                f"{args.exclude_pairs or 'nothing'} left out; paths relative to shared/datasets."
                " CelebA: non-commercial research only.\n")
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["image_a", "image_b", "same", "fold", "id_a", "id_b"])
        w.writerows(rows)
    used_ids = {r[4] for r in rows} | {r[5] for r in rows}
    used_imgs = {r[0] for r in rows} | {r[1] for r in rows}
    print(f"wrote {out}: {sum(r[2] for r in rows)} same + {sum(1 - r[2] for r in rows)} different"
          f" pairs, {args.folds} identity-disjoint folds, {len(used_ids)} identities, "
          f"{len(used_imgs)} images ({len(excluded)} held-out identities left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
