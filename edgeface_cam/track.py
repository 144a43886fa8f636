"""A small IoU tracker with per-track name voting and at most two decisions a track.

Matching is greedy (highest IoU pair first) rather than Hungarian: with a handful of faces a
frame the two agree almost always, and greedy needs no scipy on the Pi (a 40 MB wheel).

Each track is embedded when it appears, then every ``embed_every`` frames, or sooner when its
quality beats the best seen so far by ``quality_margin``. Each embedding's gallery match is a
vote; the label is the score-weighted winner of the last ``vote_window`` votes, so one odd frame
does not flip it. A track is *decided* (the pipeline emits its event)
as soon as a name has ``confirm_votes`` votes and leads the vote, or as unknown after
``unknown_after`` usable embeddings (face quality >= ``min_quality``: a profile or blurred face
must not make a stranger of someone who turns to the camera a moment later) without a leading
name; a track that ends (or a run that stops) before either is decided on what it has.
A track decided unknown that later earns a name the same way (someone walking up from afar:
small, blurred faces first) is decided once more, as recognised: at most two events a track.

Boxes can pass from one person to another (people crossing, a cut in a video) with a good IoU,
so each new embedding is also compared with the track's recent ones: below ``split_below``
cosine the old track ends and the face starts a new one (its own votes, its own event).
``split_below`` is low (0.1) because the same person can measure 0.12 to their own track (a
small face looking down); after a shot cut (``scene_changed``, see ``shotcut``) every live track
is re-embedded at once and split below the stricter ``split_after_cut`` (0.3: the same person
measured >= 0.33 within a shot of the fixture clips bar that one bowed head, and faces of
different people at most 0.27 at the 99th percentile). The same stricter cosine applies when an
embedding matches an enrolled person other than the one the track is named after (two people
crossing), since a gallery match is evidence of its own.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field

import numpy as np

from .config import TrackingConfig
from .detect import Face

# A vote's weight is its match score; this floor keeps a (rare) negative cosine from counting
# against its own label.
MIN_VOTE_WEIGHT = 0.01


@dataclass
class Vote:
    name: str | None
    score: float


@dataclass
class Track:
    id: int
    face: Face
    last_frame: int
    missed: int = 0
    quality: float = 0.0
    best_quality: float = -1.0
    embeddings: int = 0
    usable: int = 0  # embeddings from faces of at least min_quality
    last_embed_frame: int | None = None
    votes: deque[Vote] = field(default_factory=deque)
    recent: deque[np.ndarray] = field(default_factory=deque)  # last embeddings (unit rows)
    name: str | None = None  # the current voted label (None = unknown / not yet embedded)
    score: float = 0.0  # mean score of the votes for ``name``
    decided: bool = False
    decided_name: str | None = None  # the name of the last decision (None: unknown)
    cut_pending: bool = False  # a shot cut since the last embedding: check who this is
    snapshot: np.ndarray | None = None  # picture of the best face so far (pipeline-owned)
    # The best face so far (highest quality) as the sighting stores it: its embedding (unit),
    # aligned crop and, for still images, the file it came from.
    best_embedding: np.ndarray | None = None
    best_crop: np.ndarray | None = None
    best_file: str | None = None

    @property
    def box(self) -> np.ndarray:
        return self.face.box

    @property
    def appearance(self) -> np.ndarray | None:
        """Unit mean of the recent embeddings: what this track's face looks like."""
        if not self.recent:
            return None
        m = np.mean(self.recent, axis=0)
        return m / max(float(np.linalg.norm(m)), 1e-12)

    @property
    def event(self) -> str:
        return "recognized" if self.name is not None else "unknown"


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4 xywh) with every box in ``b`` (M, 4 xywh)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, 0, None], b[None, :, 0])
    ih = np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, 1, None], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


class Tracker:
    def __init__(self, iou_threshold: float | None = None, max_age: int | None = None,
                 embed_every: int | None = None, vote_window: int | None = None, *,
                 quality_margin: float = 0.1, confirm_votes: int = 2, unknown_after: int = 3,
                 min_quality: float = 0.3, split_below: float = 0.1,
                 split_after_cut: float = 0.3) -> None:
        # The four config keys default to the config's one definition (``tracking``).
        t = TrackingConfig()
        iou_threshold = t.iou_threshold if iou_threshold is None else iou_threshold
        max_age = t.max_age if max_age is None else max_age
        embed_every = t.embed_every if embed_every is None else embed_every
        vote_window = t.vote_window if vote_window is None else vote_window
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        for key, val in (("max_age", max_age), ("embed_every", embed_every),
                         ("vote_window", vote_window), ("confirm_votes", confirm_votes),
                         ("unknown_after", unknown_after)):
            if int(val) < (0 if key == "max_age" else 1):
                raise ValueError(f"{key} must be a positive integer, got {val}")
        self.iou_threshold = float(iou_threshold)
        self.max_age = int(max_age)
        self.embed_every = int(embed_every)
        self.vote_window = int(vote_window)
        self.quality_margin = float(quality_margin)
        self.confirm_votes = int(confirm_votes)
        self.unknown_after = int(unknown_after)
        self.min_quality = float(min_quality)
        self.split_below = float(split_below)
        self.split_after_cut = float(split_after_cut)
        self.tracks: list[Track] = []
        self._next_id = 1
        self._frame = -1
        self._decided: list[Track] = []

    # --- association -------------------------------------------------------------------------
    def update(self, faces: list[Face], frame: int | None = None) -> list[Track]:
        """Associate this frame's faces with the live tracks; returns the tracks seen in this
        frame, in the order of ``faces``. Tracks unseen for more than ``max_age`` frames end."""
        self._frame = self._frame + 1 if frame is None else int(frame)
        live = [t for t in self.tracks]
        assigned: list[Track | None] = [None] * len(faces)
        if live and faces:
            iou = iou_matrix(np.stack([t.box for t in live]), np.stack([f.box for f in faces]))
            # Greedy: take the best remaining pair while it clears the threshold.
            order = np.dstack(np.unravel_index(np.argsort(-iou, axis=None), iou.shape))[0]
            used_t, used_f = set(), set()
            for ti, fi in order:
                if iou[ti, fi] < self.iou_threshold:
                    break
                if ti in used_t or fi in used_f:
                    continue
                used_t.add(ti)
                used_f.add(fi)
                t = live[ti]
                t.face, t.last_frame, t.missed = faces[fi], self._frame, 0
                assigned[fi] = t
        for t in live:
            if t.last_frame != self._frame:
                t.missed += 1
        for fi, f in enumerate(faces):
            if assigned[fi] is None:
                t = Track(id=self._next_id, face=f, last_frame=self._frame)
                self._next_id += 1
                self.tracks.append(t)
                assigned[fi] = t
        ended = [t for t in self.tracks if t.missed > self.max_age]
        self.tracks = [t for t in self.tracks if t.missed <= self.max_age]
        for t in ended:
            self._finish(t)
        return [t for t in assigned if t is not None]

    # --- embedding schedule and votes --------------------------------------------------------
    def wants_embedding(self, track: Track, quality: float) -> bool:
        """Whether to embed ``track`` in the current frame (also records its quality)."""
        track.quality = float(quality)
        if track.last_embed_frame is None or track.cut_pending:
            return True
        if self._frame - track.last_embed_frame >= self.embed_every:
            return True
        return quality > track.best_quality + self.quality_margin

    def observe(self, track: Track, name: str | None, score: float, quality: float,
                embedding: np.ndarray | None = None, crop: np.ndarray | None = None,
                file: str | None = None) -> Track:
        """Record one embedding's gallery match. Returns the track that now holds the face:
        ``track`` itself, or a new one when ``embedding`` shows a different person than the
        track's recent embeddings (boxes can hand over between people who cross or swap
        places, and IoU alone cannot tell). Decisions are collected by ``pop_decisions``."""
        if embedding is not None:
            e = np.asarray(embedding, np.float32).reshape(-1)
            e = e / max(float(np.linalg.norm(e)), 1e-12)
            seen = track.appearance
            # A match to another enrolled person is evidence of a handover, like a cut is.
            other = name is not None and track.name is not None and name != track.name
            limit = (self.split_after_cut if track.cut_pending or other else self.split_below)
            if seen is not None and float(seen @ e) < limit:
                track = self._split(track)
            track.recent.append(e)
            while len(track.recent) > self.vote_window:
                track.recent.popleft()
        track.cut_pending = False
        track.embeddings += 1
        if quality >= self.min_quality:
            track.usable += 1
        track.last_embed_frame = self._frame
        if embedding is not None and quality >= track.best_quality:
            track.best_embedding, track.best_crop, track.best_file = track.recent[-1], crop, file
        track.best_quality = max(track.best_quality, float(quality))
        track.votes.append(Vote(name, float(score)))
        while len(track.votes) > self.vote_window:
            track.votes.popleft()
        self._relabel(track)
        confirmed = (track.name is not None and sum(
            1 for v in track.votes if v.name == track.name) >= self.confirm_votes)
        if not track.decided:
            if confirmed or (track.name is None and track.usable >= self.unknown_after):
                self._decide(track)
        elif confirmed and track.decided_name is None:
            self._decide(track)  # decided unknown, now recognised: the second and last event
        return track

    def _split(self, old: Track) -> Track:
        """End ``old`` here and give its current face to a new track."""
        new = Track(id=self._next_id, face=old.face, last_frame=self._frame)
        self._next_id += 1
        self.tracks[self.tracks.index(old)] = new
        self._finish(old)
        return new

    def _relabel(self, track: Track) -> None:
        weight: dict[str | None, float] = defaultdict(float)
        scores: dict[str | None, list[float]] = defaultdict(list)
        for v in track.votes:
            weight[v.name] += max(v.score, MIN_VOTE_WEIGHT)
            scores[v.name].append(v.score)
        # Ties go to the label already shown (stable), then to the most recent vote.
        recent = [v.name for v in reversed(track.votes)]
        best = max(weight, key=lambda k: (weight[k], k == track.name, -recent.index(k)))
        track.name = best
        track.score = float(np.mean(scores[best]))

    def _decide(self, track: Track) -> None:
        track.decided = True
        track.decided_name = track.name
        self._decided.append(track)

    def _finish(self, track: Track) -> None:
        if not track.decided and track.embeddings > 0:
            self._decide(track)

    def scene_changed(self) -> None:
        """A shot cut: embed every live track at its next frame and split it below
        ``split_after_cut`` if the face is no longer the track's person."""
        for t in self.tracks:
            t.cut_pending = True

    def reschedule(self) -> None:
        """Embed every live track again at its next frame (the gallery changed under them)."""
        for t in self.tracks:
            t.last_embed_frame = None

    def take_over(self, other: Tracker) -> None:
        """Continue ``other``'s live tracks, ids and frame count (a reload rebuilt the pipeline:
        people in view keep their track and are not announced again); this tracker's settings
        apply from now on."""
        self.tracks, self._next_id, self._frame = other.tracks, other._next_id, other._frame
        self._decided = other._decided + self._decided
        other.tracks, other._decided = [], []

    @property
    def created(self) -> int:
        """How many tracks this tracker has started."""
        return self._next_id - 1

    # --- decisions ---------------------------------------------------------------------------
    def pop_decisions(self) -> list[Track]:
        """Tracks decided since the last call: a track appears at most twice in its life
        (decided, and once more if a stranger's track later earns a name)."""
        out, self._decided = self._decided, []
        return out

    def end_scene(self) -> list[Track]:
        """A still image is a scene of its own: decide every live track and start afresh (no
        track spans two images); the decisions pending."""
        out = self.flush()
        self.tracks = []
        return out

    def flush(self) -> list[Track]:
        """End of the run: decide every live track that has votes, and return all pending."""
        for t in self.tracks:
            self._finish(t)
        return self.pop_decisions()
