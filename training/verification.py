"""Face verification maths: 10-fold accuracy, ROC, TAR at FAR, threshold for a target FAR.

numpy only (the ROC picture uses matplotlib when installed, else OpenCV), so the device, CI and
the workstation all compute the same figures. Scores are similarities: higher means "same person"
and a pair is accepted when ``score >= threshold`` (use ``-distance`` for distance metrics).

The 10-fold protocol is the insightface one: for each fold the threshold that maximises accuracy on
the other nine folds is applied to the held-out fold; the figure is the mean (and std) of the ten
held-out accuracies. Unlike insightface's fixed grid of thresholds, the best threshold is found
exactly (every distinct score is a candidate), so no grid step can cost accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FARS = (1e-3, 1e-4)


def _as_arrays(scores: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(issame).reshape(-1).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"{len(s)} scores for {len(y)} labels")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    return s, y


def contiguous_folds(n: int, n_folds: int = 10) -> np.ndarray:
    """Fold id of each of ``n`` pairs in file order (sklearn KFold(shuffle=False), as insightface
    does for its .bin files, whose pairs are interleaved same/different)."""
    if n < n_folds:
        raise ValueError(f"need at least {n_folds} pairs for {n_folds} folds, got {n}")
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    return np.repeat(np.arange(n_folds), sizes)


def stratified_folds(issame: np.ndarray, n_folds: int = 10) -> np.ndarray:
    """Fold ids that split the same and the different pairs each into contiguous blocks.

    For pair lists that hold all same pairs first: plain contiguous folds would give folds of a
    single class, on which the best threshold is meaningless.
    """
    y = np.asarray(issame).astype(bool)
    folds = np.empty(len(y), dtype=np.int64)
    for cls in (True, False):
        idx = np.flatnonzero(y == cls)
        if len(idx) < n_folds:
            raise ValueError(f"need at least {n_folds} {'same' if cls else 'different'} pairs")
        folds[idx] = contiguous_folds(len(idx), n_folds)
    return folds


def best_threshold(scores: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy of ``score >= threshold`` on these pairs.

    Exact: after sorting, accepting the top k scores for every k is one cumulative sum. The
    threshold is the midpoint between the last accepted and the first rejected score.
    """
    s, y = _as_arrays(scores, issame)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # correct(k) = positives among the top k + negatives among the rest.
    tp = np.concatenate([[0], np.cumsum(y)])
    tn = (~y).sum() - np.concatenate([[0], np.cumsum(~y)])
    correct = tp + tn
    # A cut can only fall between two different scores (ties are accepted or rejected together).
    valid = np.ones(len(s) + 1, dtype=bool)
    valid[1:-1] = s[:-1] > s[1:]
    k = int(np.argmax(np.where(valid, correct, -1)))
    if k == 0:
        thr = s[0] + 1e-6
    elif k == len(s):
        thr = s[-1] - 1e-6
    else:
        thr = (s[k - 1] + s[k]) / 2
    return float(thr), float(correct[k] / len(s))


def accuracy(scores: np.ndarray, issame: np.ndarray, threshold: float) -> float:
    s, y = _as_arrays(scores, issame)
    return float(((s >= threshold) == y).mean())


@dataclass
class KFoldResult:
    accuracies: np.ndarray  # held-out accuracy per fold
    thresholds: np.ndarray  # threshold chosen on the other folds, per fold

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def std(self) -> float:
        # np.std (population), as insightface reports it.
        return float(self.accuracies.std())


def kfold_accuracy(scores: np.ndarray, issame: np.ndarray,
                   folds: np.ndarray | None = None, n_folds: int = 10) -> KFoldResult:
    """The 10-fold verification accuracy; ``folds`` gives each pair's fold id (default:
    ``stratified_folds``)."""
    s, y = _as_arrays(scores, issame)
    folds = stratified_folds(y, n_folds) if folds is None else np.asarray(folds)
    if folds.shape != s.shape:
        raise ValueError(f"{len(folds)} fold ids for {len(s)} pairs")
    ids = np.unique(folds)
    if len(ids) < 2:
        raise ValueError("need at least two folds")
    accs, thrs = [], []
    for f in ids:
        test = folds == f
        thr, _ = best_threshold(s[~test], y[~test])
        accs.append(accuracy(s[test], y[test], thr))
        thrs.append(thr)
    return KFoldResult(np.array(accs), np.array(thrs))


def roc(scores: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, thresholds) at every distinct score, thresholds descending; accept if >=."""
    s, y = _as_arrays(scores, issame)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC needs both same and different pairs")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[s[:-1] > s[1:], True]  # the last index of each run of equal scores
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    far = np.r_[0.0, fp / n_neg]
    tar = np.r_[0.0, tp / n_pos]
    thr = np.r_[np.inf, s[last]]
    return far, tar, thr


def threshold_at_far(scores: np.ndarray, issame: np.ndarray, far: float) -> float:
    """The lowest threshold whose false accept rate on these pairs is at most ``far``.

    With N different pairs, at most floor(far * N) of them may score >= the threshold, so the
    threshold sits just above the (floor(far * N) + 1)-th highest impostor score. When
    far * N < 1 this is just above the highest impostor score: the FAR is then not resolved
    (see ``far_resolved``).
    """
    if not 0 <= far < 1:
        raise ValueError(f"FAR must be in [0, 1), got {far}")
    s, y = _as_arrays(scores, issame)
    neg = np.sort(s[~y])[::-1]
    if len(neg) == 0:
        raise ValueError("threshold at FAR needs different-identity pairs")
    k = int(np.floor(far * len(neg) + 1e-9))
    if k >= len(neg):
        return float(neg[-1])
    # Just above the (k+1)-th highest impostor: ties with it are rejected too.
    return float(np.nextafter(neg[k], np.inf))


def far_resolved(n_negatives: int, far: float) -> bool:
    """True when a FAR this small is measurable with this many impostor pairs (far * N >= 1)."""
    return far * n_negatives >= 1 - 1e-9


def tar_at_far(scores: np.ndarray, issame: np.ndarray, far: float) -> tuple[float, float]:
    """(TAR, threshold) at the ``threshold_at_far`` threshold."""
    s, y = _as_arrays(scores, issame)
    thr = threshold_at_far(s, y, far)
    return float((s[y] >= thr).mean()), thr


def rates_at(scores: np.ndarray, issame: np.ndarray, threshold: float) -> tuple[float, float]:
    """(TAR, FAR) of ``score >= threshold``: check a chosen threshold on other pairs."""
    s, y = _as_arrays(scores, issame)
    if y.all() or not y.any():
        raise ValueError("TAR and FAR need both same and different pairs")
    return float((s[y] >= threshold).mean()), float((s[~y] >= threshold).mean())


@dataclass
class Report:
    """Everything ``evaluate`` prints for one set of scored pairs."""

    kfold: KFoldResult
    n_same: int
    n_diff: int
    tar: dict[float, tuple[float, float]] = field(default_factory=dict)  # far -> (tar, thr)
    impostors: int = 0  # different pairs the FAR figures rest on

    def as_dict(self) -> dict:
        return {
            "accuracy": self.kfold.mean,
            "std": self.kfold.std,
            "fold_accuracies": self.kfold.accuracies.tolist(),
            "fold_thresholds": self.kfold.thresholds.tolist(),
            "n_same": self.n_same,
            "n_different": self.n_diff,
            "far_impostor_pairs": self.impostors,
            "tar_at_far": {f"{far:g}": {"tar": t, "threshold": thr,
                                        "resolved": far_resolved(self.impostors, far)}
                           for far, (t, thr) in self.tar.items()},
        }


def report(scores: np.ndarray, issame: np.ndarray, folds: np.ndarray | None = None,
           fars: tuple[float, ...] = FARS, far_scores: np.ndarray | None = None,
           far_issame: np.ndarray | None = None) -> Report:
    """10-fold accuracy on the pairs; TAR/threshold at each FAR on ``far_scores`` when given
    (pairs plus extra impostors), else on the pairs."""
    s, y = _as_arrays(scores, issame)
    fs, fy = (s, y) if far_scores is None else _as_arrays(far_scores, far_issame)
    tars = {far: tar_at_far(fs, fy, far) for far in fars}
    return Report(kfold_accuracy(s, y, folds), int(y.sum()), int((~y).sum()), tars,
                  int((~fy).sum()))


def save_roc_png(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path,
                 title: str = "ROC") -> Path:
    """Write TAR against FAR (log x axis, 1e-5..1) for one or more named curves."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _roc_png_cv2(curves, path, title)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    for name, (far, tar) in curves.items():
        keep = far > 0
        ax.plot(far[keep], tar[keep], label=name)
    ax.set_xscale("log")
    ax.set_xlim(1e-5, 1)
    ax.set_ylim(0, 1.001)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _roc_png_cv2(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path,
                 title: str) -> Path:
    # Hand-drawn fallback: matplotlib is not a dependency of the project (nor of the device).
    import cv2

    w, h, left, right, top, bottom = 640, 480, 60, 20, 30, 50
    img = np.full((h, w, 3), 255, np.uint8)
    pw, ph = w - left - right, h - top - bottom
    lo, hi = -5.0, 0.0

    def xy(far: np.ndarray, tar: np.ndarray) -> np.ndarray:
        x = left + (np.log10(np.clip(far, 10**lo, 1)) - lo) / (hi - lo) * pw
        y = top + (1 - tar) * ph
        return np.stack([x, y], 1).round().astype(np.int32)

    font = cv2.FONT_HERSHEY_SIMPLEX
    for e in range(int(lo), int(hi) + 1):
        x = int(left + (e - lo) / (hi - lo) * pw)
        cv2.line(img, (x, top), (x, top + ph), (220, 220, 220), 1)
        cv2.putText(img, f"1e{e}", (x - 15, top + ph + 18), font, 0.4, (0, 0, 0), 1)
    for t in np.linspace(0, 1, 6):
        y = int(top + (1 - t) * ph)
        cv2.line(img, (left, y), (left + pw, y), (220, 220, 220), 1)
        cv2.putText(img, f"{t:.1f}", (left - 35, y + 4), font, 0.4, (0, 0, 0), 1)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), (0, 0, 0), 1)
    cv2.putText(img, title, (left, 20), font, 0.5, (0, 0, 0), 1)
    cv2.putText(img, "false accept rate", (left + pw // 2 - 60, h - 12), font, 0.45, (0, 0, 0), 1)
    colours = [(200, 80, 0), (0, 0, 200), (0, 150, 0), (150, 0, 150), (0, 140, 200)]
    for i, (name, (far, tar)) in enumerate(curves.items()):
        c = colours[i % len(colours)]
        keep = far > 0
        cv2.polylines(img, [xy(far[keep], tar[keep])], False, c, 2, cv2.LINE_AA)
        cv2.putText(img, name, (left + pw - 200, top + ph - 15 - 18 * i), font, 0.45, c, 1)
    if not cv2.imwrite(str(path), img):
        raise ValueError(f"cannot write {path}")
    return path
