"""The match threshold in force: fixed by the config, or ``auto`` from the model card's impostor
calibration for the gallery held now.

A stranger's face is compared with every embedding in the gallery and named after the best
person when the best score reaches the threshold t. With ``far(t)`` the share of
different-identity pairs scoring >= t (the card's ``calibration``, measured the device's way),
a stranger is named with probability

    P(named) = 1 - (1 - far(t)) ** k

where k is the effective number of independent comparisons. A person's photos look alike, so
a stranger near one of them is often near the others: m photos of one person count as
m ** alpha comparisons, alpha = the card's ``photos_exponent`` (measured by
``training.calibrate``: about 0.8; 1 would be independent photos, 0 copies). So for P people
holding M embeddings, k = P * (M / P) ** alpha. ``auto`` solves P(named) =
``recognizer.false_accept`` for t; it rises with the gallery. Checked on held-out CelebA
identities (``training.evaluate --openset``, docs/evaluation.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

AUTO = "auto"
DEFAULT_FALSE_ACCEPT = 0.01
# The documented fixed threshold for a card without calibration: FAR 1e-4 per comparison for
# edgeface_xs.tflite on benchmarks/pairs_celeba.tsv (docs/evaluation.md).
FALLBACK_THRESHOLD = 0.35


class CalibrationError(ValueError):
    """A card's ``calibration`` object is malformed."""


@dataclass(frozen=True)
class Calibration:
    """Upper-tail quantiles of the impostor score: ``far[i]`` = P(impostor >= ``score[i]``)."""

    far: tuple[float, ...]  # decreasing
    score: tuple[float, ...]  # increasing
    photos_exponent: float = 1.0
    pairs: int = 0
    # Measured on held-out identities (training.evaluate --openset --write-card): rows of
    # (gallery size, embeddings a person, DIR at the auto threshold).
    openset: tuple[tuple[int, float, float], ...] = ()
    openset_data: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        try:
            far = tuple(float(q) for q in d["far"])
            score = tuple(float(s) for s in d["score"])
            alpha = float(d.get("photos_exponent", 1.0))
            pairs = int(d.get("pairs", 0))
            measured = d.get("openset") or {}
            rows = tuple((int(r["size"]), float(r["embeddings_per_person"]), float(r["dir"]))
                         for r in measured.get("rows", ()))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CalibrationError(f"calibration lacks or garbles {e}") from None
        if len(far) < 2 or len(far) != len(score):
            raise CalibrationError("calibration needs matching far and score lists of >= 2")
        if not (all(0 < q < 1 for q in far) and all(np.diff(far) < 0)
                and all(np.diff(score) >= 0) and 0 <= alpha <= 1):
            raise CalibrationError("calibration must have far decreasing in (0, 1), score "
                                   "non-decreasing and photos_exponent in [0, 1]")
        return cls(far, score, alpha, pairs, rows, str(measured.get("data", "")))

    @property
    def lowest_far(self) -> float:
        return self.far[-1]

    def score_at(self, far: float) -> float:
        """The score s with P(impostor >= s) = far, interpolated linearly in log10(far);
        beyond the measured range, extended along the last measured decade (and clipped to
        [-1, 1])."""
        x = -np.log10(self.far)  # increasing
        y = np.asarray(self.score)
        q = -math.log10(max(far, 1e-300))
        if q <= x[-1]:
            return float(np.clip(np.interp(q, x, y), -1, 1))
        j = int(np.searchsorted(x, x[-1] - 1.0))  # the point a decade above the last
        j = min(j, len(x) - 2)
        slope = (y[-1] - y[j]) / (x[-1] - x[j])
        return float(np.clip(y[-1] + slope * (q - x[-1]), -1, 1))

    def dir_at(self, people: int, embeddings: int) -> float | None:
        """The share of enrolled people recognised at the auto threshold, measured on
        held-out photos, for the nearest measured photos per person, interpolated in log
        gallery size (None when not measured)."""
        if not self.openset or people <= 0:
            return None
        per = max(embeddings / people, 1.0)
        photos = min({r[1] for r in self.openset}, key=lambda m: abs(math.log(m / per)))
        rows = sorted((r[0], r[2]) for r in self.openset if r[1] == photos)
        sizes = np.log10([r[0] for r in rows])
        return float(np.interp(math.log10(people), sizes, [r[1] for r in rows]))

    def far_at(self, score: float) -> float:
        """P(impostor >= score), the inverse of ``score_at`` within the measured range
        (clamped to its ends outside it)."""
        y = np.asarray(self.score)
        x = -np.log10(self.far)
        if score <= y[0]:
            return self.far[0]
        if score >= y[-1]:
            return self.far[-1]
        # Plateaus (equal scores) would make interp ambiguous: take the last of a run.
        keep = np.r_[np.diff(y) > 0, True]
        return float(10 ** -np.interp(score, y[keep], x[keep]))


def comparisons(people: int, embeddings: int, photos_exponent: float) -> float:
    """k: the effective number of independent comparisons a stranger gets."""
    if people <= 0:
        return 1.0
    per_person = max(embeddings, people) / people
    return float(people * per_person ** photos_exponent)


def per_comparison_far(false_accept: float, k: float) -> float:
    """The far(t) at which 1 - (1 - far) ** k = false_accept."""
    return float(-math.expm1(math.log1p(-false_accept) / max(k, 1.0)))


def named_probability(far: float, k: float) -> float:
    return float(-math.expm1(max(k, 1.0) * math.log1p(-min(far, 1 - 1e-12))))


class Threshold:
    """The threshold in force for a gallery of ``people`` holding ``embeddings``: a fixed
    number, or ``auto`` from a calibration."""

    def __init__(self, fixed: float | None = None, calibration: Calibration | None = None,
                 false_accept: float = DEFAULT_FALSE_ACCEPT,
                 why: str = "fixed by recognizer.threshold") -> None:
        if fixed is None and calibration is None:
            raise ValueError("a threshold needs a fixed value or a calibration")
        if not 0 < false_accept < 1:
            raise ValueError(f"false_accept must be in (0, 1), got {false_accept}")
        self.fixed = None if fixed is None else float(fixed)
        self.calibration = calibration
        self.false_accept = float(false_accept)
        self.why = why  # for a fixed threshold: where the number comes from

    @property
    def auto(self) -> bool:
        return self.fixed is None

    def at(self, people: int, embeddings: int) -> float:
        """The threshold for this gallery (rounded to 1e-4, the calibration's resolution)."""
        if self.fixed is not None:
            return self.fixed
        cal = self.calibration
        k = comparisons(people, embeddings, cal.photos_exponent)
        return round(cal.score_at(per_comparison_far(self.false_accept, k)), 4)

    def one_to_one(self) -> float:
        """The threshold for one comparison (``verify``, the enrol same-person check)."""
        return self.at(1, 1)

    def expected_fpir(self, people: int, embeddings: int) -> float | None:
        """The expected share of strangers named at the threshold in force, from the
        calibration (None without one)."""
        if self.calibration is None or people <= 0:
            return None if self.calibration is None else 0.0
        k = comparisons(people, embeddings, self.calibration.photos_exponent)
        return named_probability(self.calibration.far_at(self.at(people, embeddings)), k)

    def describe(self, people: int, embeddings: int) -> str:
        """One line for doctor, list and the log."""
        t = self.at(people, embeddings)
        fpir = self.expected_fpir(people, embeddings)
        rate = "" if fpir is None else f"; expected strangers named: {100 * fpir:.2g} %"
        found = None if self.calibration is None or not self.auto else (
            self.calibration.dir_at(people, embeddings))
        if found is not None:
            rate += f", enrolled people recognised: ~{100 * found:.0f} % (held-out CelebA photos)"
        if self.fixed is not None:
            return f"threshold {t:.4f} ({self.why}{rate})"
        return (f"threshold {t:.4f} (auto for {_count(people, 'person', 'people')}, "
                f"{_count(embeddings, 'embedding', 'embeddings')}: recognizer.false_accept "
                f"{self.false_accept:g}{rate})")


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def from_settings(setting: float | str, false_accept: float,
                  calibration: Mapping[str, Any] | None, model: str = "the model") -> Threshold:
    """The ``Threshold`` for ``recognizer.threshold`` (a number or "auto"), with the card's
    calibration object (or None; with a fixed number it still gives the expected rates). A
    card without one makes ``auto`` fall back to ``FALLBACK_THRESHOLD`` with a warning.
    Raises ``CalibrationError`` for a malformed calibration."""
    cal = None if calibration is None else Calibration.from_dict(calibration)
    if not (isinstance(setting, str) and setting.strip().lower() == AUTO):
        return Threshold(fixed=float(setting), calibration=cal, false_accept=false_accept)
    if cal is None:
        log.warning("the card of %s has no impostor calibration: recognizer.threshold auto "
                    "falls back to %.2f (run python -m training.calibrate on it)", model,
                    FALLBACK_THRESHOLD)
        return Threshold(fixed=FALLBACK_THRESHOLD, false_accept=false_accept,
                         why="auto, but the model card has no calibration: the fixed fallback")
    return Threshold(calibration=cal, false_accept=false_accept)

