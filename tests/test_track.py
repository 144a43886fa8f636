"""The IoU tracker: ids, ageing, the embedding schedule, voting and once-per-track decisions."""

from __future__ import annotations

import numpy as np
import pytest

from edgeface_cam.detect import Face
from edgeface_cam.track import Tracker, iou_matrix

pytestmark = pytest.mark.device


def face(x: float, y: float, w: float = 80, h: float = 100) -> Face:
    box = np.array([x, y, w, h], np.float32)
    lm = np.array([[x + 0.3 * w, y + 0.4 * h], [x + 0.7 * w, y + 0.4 * h],
                   [x + 0.5 * w, y + 0.6 * h], [x + 0.35 * w, y + 0.8 * h],
                   [x + 0.65 * w, y + 0.8 * h]], np.float32)
    return Face(box=box, landmarks=lm, score=0.9)


def test_iou_matrix_known_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]])
    # Same box: 1; half overlap: 50 / (100 + 100 - 50) = 1/3; apart: 0.
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 1 / 3, 0.0]], atol=1e-9)


def test_ids_stable_across_a_moving_box():
    tr = Tracker(iou_threshold=0.3, max_age=5)
    ids = []
    for i in range(30):  # two faces walking in opposite directions, 4 px a frame
        tracks = tr.update([face(100 + 4 * i, 50), face(400 - 4 * i, 60)], frame=i)
        ids.append(tuple(t.id for t in tracks))
    assert len(set(ids)) == 1
    assert len(set(ids[0])) == 2
    assert tr.created == 2


def test_tracks_follow_faces_when_detection_order_swaps():
    tr = Tracker()
    a, b = tr.update([face(0, 0), face(300, 0)], frame=0)
    t2 = tr.update([face(302, 1), face(2, 1)], frame=1)  # largest-first order may change
    assert [t.id for t in t2] == [b.id, a.id]


def test_new_id_after_max_age_and_same_id_within_it():
    tr = Tracker(max_age=3)
    (first,) = tr.update([face(100, 100)], frame=0)
    for i in range(1, 4):  # gone for 3 frames: still alive (missed == max_age)
        assert tr.update([], frame=i) == []
    (again,) = tr.update([face(101, 100)], frame=4)
    assert again.id == first.id
    for i in range(5, 10):  # gone for 5 frames > max_age: ended
        tr.update([], frame=i)
    assert tr.tracks == []
    (new,) = tr.update([face(101, 100)], frame=10)
    assert new.id != first.id


def test_far_jump_is_a_new_track():
    tr = Tracker(iou_threshold=0.3)
    (a,) = tr.update([face(0, 0)], frame=0)
    (b,) = tr.update([face(500, 300)], frame=1)
    assert a.id != b.id


def test_embedding_schedule_every_n_and_on_quality_gain():
    tr = Tracker(embed_every=10, quality_margin=0.1)
    embedded = []
    for i in range(25):
        (t,) = tr.update([face(100 + i, 100)], frame=i)
        q = 0.9 if i == 13 else 0.5  # a sharper frontal frame at 13
        if tr.wants_embedding(t, q):
            embedded.append(i)
            t = tr.observe(t, "ann", 0.6, q)
    # Appears (0), then every 10 (10), the quality jump (13), then 10 after that (23).
    assert embedded == [0, 10, 13, 23]


def test_vote_picks_score_weighted_majority():
    tr = Tracker(vote_window=5, confirm_votes=99, unknown_after=99)
    (t,) = tr.update([face(0, 0)], frame=0)
    for name, score in [("ann", 0.6), ("bob", 0.45), ("ann", 0.55), ("bob", 0.5), ("ann", 0.5)]:
        tr.observe(t, name, score, 0.5)
    assert t.name == "ann"
    assert t.score == pytest.approx((0.6 + 0.55 + 0.5) / 3)


def test_label_is_stable_against_one_odd_vote_but_follows_the_window():
    tr = Tracker(vote_window=5, confirm_votes=99, unknown_after=99)
    (t,) = tr.update([face(0, 0)], frame=0)
    for _ in range(4):
        tr.observe(t, "ann", 0.55, 0.5)
    tr.observe(t, "bob", 0.8, 0.5)  # one confident odd vote
    assert t.name == "ann"
    for _ in range(5):
        tr.observe(t, None, 0.1, 0.5)  # the window is only 5: old votes fall out
    assert t.name is None


def test_score_weighting_beats_a_head_count():
    tr = Tracker(vote_window=5, confirm_votes=99, unknown_after=99)
    (t,) = tr.update([face(0, 0)], frame=0)
    for name, score in [(None, 0.1), (None, 0.15), ("ann", 0.7)]:
        tr.observe(t, name, score, 0.5)
    assert t.name == "ann"  # 0.7 outweighs two weak "nobody" votes (0.25)


def test_decided_once_recognized_after_confirm_votes():
    tr = Tracker(confirm_votes=2)
    (t,) = tr.update([face(0, 0)], frame=0)
    tr.observe(t, "ann", 0.6, 0.5)
    assert not t.decided and tr.pop_decisions() == []
    tr.observe(t, "ann", 0.6, 0.5)
    assert t.decided
    tr.observe(t, "ann", 0.6, 0.5)
    assert tr.pop_decisions() == [t]  # once, not at every later vote
    assert tr.pop_decisions() == []
    assert t.event == "recognized" and t.name == "ann"


def test_unknown_after_k_usable_embeddings():
    tr = Tracker(unknown_after=3, min_quality=0.3)
    (t,) = tr.update([face(0, 0)], frame=0)
    for _ in range(5):  # a profile or blurred face is no evidence of a stranger
        tr.observe(t, None, 0.2, 0.1)
    assert not t.decided
    tr.observe(t, None, 0.2, 0.5)
    tr.observe(t, None, 0.2, 0.5)
    assert not t.decided
    tr.observe(t, None, 0.2, 0.5)
    assert t.decided and t.event == "unknown" and t.name is None
    assert tr.pop_decisions() == [t]


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
    return v / np.linalg.norm(v)


def test_a_different_person_in_the_same_box_starts_a_new_track():
    tr = Tracker(split_below=0.1, confirm_votes=2)
    (t,) = tr.update([face(0, 0)], frame=0)
    ann, bob = _unit(1), _unit(2)  # independent random directions: cosine ~ 0
    noisy = ann + 0.5 * _unit(3) / np.sqrt(1.25)  # the same person, another frame
    assert tr.observe(t, "ann", 0.6, 0.5, ann) is t
    assert tr.observe(t, "ann", 0.6, 0.5, noisy) is t
    assert t.decided
    new = tr.observe(t, None, 0.05, 0.5, bob)
    assert new is not t and new.id != t.id
    assert tr.tracks == [new] and new.votes[-1].name is None and new.embeddings == 1
    (same,) = tr.update([face(2, 1)], frame=1)
    assert same is new  # the box now belongs to the new track
    assert tr.pop_decisions() == [t]


def _at(cos: float, ref: np.ndarray, seed: int) -> np.ndarray:
    """A unit vector at cosine ``cos`` to the unit vector ``ref``."""
    o = _unit(seed)
    o = o - (o @ ref) * ref
    return cos * ref + np.sqrt(1 - cos**2) * o / np.linalg.norm(o)


def test_after_a_shot_cut_a_track_is_checked_at_once_and_split_more_readily():
    tr = Tracker(embed_every=10, split_below=0.1, split_after_cut=0.3)
    (t,) = tr.update([face(0, 0)], frame=0)
    assert tr.wants_embedding(t, 0.5)
    ann = _unit(1)
    tr.observe(t, "ann", 0.6, 0.5, ann)
    (t,) = tr.update([face(1, 0)], frame=1)
    assert not tr.wants_embedding(t, 0.5)  # embedded a frame ago
    # Within a shot, cosine 0.2 (a face looking down, say) stays in the track.
    assert tr.observe(t, "ann", 0.3, 0.5, _at(0.2, ann, 2)) is t
    tr.scene_changed()
    (t,) = tr.update([face(1, 0)], frame=2)
    assert t.cut_pending and tr.wants_embedding(t, 0.5)  # re-checked at once
    # The same person after the cut: still the track, and the check is done.
    assert tr.observe(t, "ann", 0.5, 0.5, _at(0.6, t.appearance, 3)) is t
    assert not t.cut_pending and not tr.wants_embedding(t, 0.5)
    # Someone else after a cut, at the same 0.2 that did not split within the shot: a new track.
    tr.scene_changed()
    new = tr.observe(t, None, 0.05, 0.5, _at(0.2, t.appearance, 4))
    assert new is not t and not new.cut_pending and tr.tracks == [new]


def test_a_match_to_another_enrolled_person_splits_at_the_stricter_cosine():
    tr = Tracker(split_below=0.1, split_after_cut=0.3, confirm_votes=2)
    (t,) = tr.update([face(0, 0)], frame=0)
    ann = _unit(1)
    tr.observe(t, "ann", 0.6, 0.5, ann)
    tr.observe(t, "ann", 0.6, 0.5, _at(0.8, ann, 2))
    assert t.decided and t.name == "ann"
    # Cosine 0.2 without a name: Ann looking away; with Bob's name: Bob took the box.
    assert tr.observe(t, None, 0.2, 0.5, _at(0.2, t.appearance, 3)) is t
    assert tr.observe(t, "bob", 0.4, 0.5, _at(0.6, t.appearance, 4)) is t  # look-alike, same face
    bob = tr.observe(t, "bob", 0.5, 0.5, _at(0.2, t.appearance, 5))
    assert bob is not t and bob.name == "bob" and tr.tracks == [bob]


def test_a_stranger_who_turns_out_to_be_enrolled_gets_a_second_event():
    tr = Tracker(unknown_after=3, confirm_votes=2, vote_window=5)
    (t,) = tr.update([face(0, 0)], frame=0)
    ann = _unit(1)
    for i in range(3):  # far away: three usable faces, no match
        tr.observe(t, None, 0.1, 0.5, _at(0.9, ann, 10 + i))
    assert [d.event for d in tr.pop_decisions()] == ["unknown"]
    tr.observe(t, "ann", 0.5, 0.6, _at(0.9, ann, 20))  # closer: one vote is not enough
    assert tr.pop_decisions() == []
    tr.observe(t, "ann", 0.6, 0.7, _at(0.9, ann, 21))
    (d,) = tr.pop_decisions()
    assert d is t and d.event == "recognized" and d.name == "ann"
    for i in range(4):  # and that is the last event of this track
        tr.observe(t, "ann", 0.6, 0.7, _at(0.9, ann, 30 + i))
    assert tr.pop_decisions() == [] and tr.flush() == []


def test_split_ends_an_undecided_track_with_its_votes():
    tr = Tracker(confirm_votes=3)
    (t,) = tr.update([face(0, 0)], frame=0)
    tr.observe(t, "ann", 0.6, 0.5, _unit(1))
    tr.observe(t, None, 0.0, 0.5, _unit(2))
    assert tr.pop_decisions() == [t] and t.name == "ann"


def test_ending_track_is_decided_on_what_it_has_and_unembedded_ones_are_not():
    tr = Tracker(max_age=1, confirm_votes=3)
    a, _b = tr.update([face(0, 0), face(300, 0)], frame=0)
    tr.observe(a, "ann", 0.6, 0.5)  # one vote: not yet confirmed
    for i in range(1, 4):
        tr.update([], frame=i)
    assert tr.pop_decisions() == [a]  # b was never embedded: nothing to say about it
    assert a.event == "recognized"


def test_flush_decides_live_tracks():
    tr = Tracker(unknown_after=5)
    (t,) = tr.update([face(0, 0)], frame=0)
    tr.observe(t, None, 0.1, 0.5)
    assert tr.pop_decisions() == []
    assert tr.flush() == [t]
    assert t.event == "unknown"


@pytest.mark.parametrize("kw", [{"iou_threshold": 0}, {"embed_every": 0}, {"vote_window": 0},
                                {"max_age": -1}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        Tracker(**kw)
