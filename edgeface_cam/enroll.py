"""Collecting good faces for enrolment: from photos, folders, a camera or a clip.

A photo must hold one dominant face; camera frames must also pass the quality gate, be a few
frames apart and show the same person as the frames before. Nothing is written here: the
samples go to ``Gallery.enroll`` in one transaction, and the CLI reports.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .app import App, UserError
from .embed import l2_normalize
from .gallery import Gallery, GalleryError, validate_name
from .recognize import FaceResult
from .sources import IMAGE_SUFFIXES, FrameSource, ImageFolderSource, open_source

# A second face at least this fraction of the largest face's size (shorter box side) makes a photo
# ambiguous for enrolment: we cannot tell whom the user means.
SIMILAR_SIZE = 0.6
# Below this cosine two faces are taken for different people when photos are enrolled under one
# name. Measured with the shipped XS model through the device path on celeba-subset's pairs.tsv
# (993 same-person, 992 different-person pairs of in-the-wild photos): 3.1 % of different-person
# pairs score above it and 9.5 % of same-person pairs (age, pose, make-up) below it. A refusal
# names the photo and `--force` overrides it; a silent mix of two people would be worse.
SAME_PERSON_MIN = 0.15
# A photo whose face embeds this close to one already enrolled for the person is that photo again.
ALREADY_ENROLLED = 0.999
# Camera enrolment keeps at most one frame in this many, so the shots differ a little.
FRAME_SPACING = 5
COUNTDOWN_S = 3


def read_image(path: str | Path) -> np.ndarray:
    """An image file as BGR uint8. IMREAD_COLOR converts greyscale and RGBA to BGR and applies
    the EXIF orientation (phone photos), so every caller sees the same 3-channel picture."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{path}: no such file")
    if not p.is_file():
        raise UserError(f"{path}: not a file")
    try:
        data = np.fromfile(p, np.uint8)  # imdecode, unlike imread, takes non-ASCII paths
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror})") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise UserError(f"{path}: not an image OpenCV can decode")
    return image


def expand_images(paths: list[str]) -> list[Path]:
    """Files as given; folders -> the images in them (sorted, not recursive)."""
    out: list[Path] = []
    for text in paths:
        p = Path(text).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"{text}: no images in this folder "
                                f"({', '.join(sorted(IMAGE_SUFFIXES)[:6])}, ...)")
            out.extend(found)
        elif not p.exists():
            raise UserError(f"{text}: no such file or folder")
        else:
            out.append(p)
    return out


def dominant_face(results: list[FaceResult]) -> FaceResult | None:
    """The one face a photo is about: the largest, unless another is of similar size."""
    if not results:
        return None
    if len(results) > 1 and results[1].face.size >= SIMILAR_SIZE * results[0].face.size:
        return None
    return results[0]


def pick_face(results: list[FaceResult], label: str) -> FaceResult:
    face = dominant_face(results)
    if face is None:
        if not results:
            raise UserError(f"{label}: no face found (need a clear, frontal face of at least the "
                            "detector's min_face pixels)")
        raise UserError(f"{label}: {len(results)} faces of similar size; crop the photo to the "
                        "one person")
    return face


@dataclass
class Sample:
    """One enrolment image: the chosen face (embedded) and where it came from."""

    result: FaceResult
    source: str
    digest: str = ""  # sha256 of the decoded pixels: the same photo given twice


def drop_duplicates(samples: list[Sample], enrolled: np.ndarray) -> tuple[list[Sample],
                                                                           list[str]]:
    """Samples without the exact repeats (the same photo twice, or a photo the person already
    has); and the sources of those skipped."""
    kept: list[Sample] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for s in samples:
        again = bool(s.digest) and s.digest in seen
        known = len(enrolled) > 0 and float((enrolled @ s.result.embedding).max()) >= \
            ALREADY_ENROLLED
        if again or known:
            skipped.append(s.source)
            continue
        seen.add(s.digest)
        kept.append(s)
    return kept, skipped


def check_same_person(samples: list[Sample], enrolled: np.ndarray, name: str) -> None:
    """Refuse photos that do not look like the person already enrolled under ``name``, or like
    each other, naming the odd one (``--force`` skips this check)."""
    embs = np.stack([s.result.embedding for s in samples])
    if len(enrolled):
        sims = embs @ l2_normalize(enrolled.mean(axis=0))
        worst = int(sims.argmin())
        if sims[worst] < SAME_PERSON_MIN:
            raise UserError(f"{samples[worst].source}: does not look like the {name} already "
                            f"enrolled (similarity {sims[worst]:.2f} < {SAME_PERSON_MIN}); "
                            "nothing written (add --force if it is the same person)")
    if len(samples) < 2:
        return
    total = embs.sum(axis=0)
    sims = np.array([float(e @ l2_normalize(total - e)) for e in embs])  # each against the others
    worst = int(sims.argmin())
    if sims[worst] >= SAME_PERSON_MIN:
        return
    odd = (f"{samples[0].source} and {samples[1].source} do not" if len(samples) == 2
           else f"{samples[worst].source} does not look like the other photos and")
    raise UserError(f"{odd} look like the same person (similarity {sims[worst]:.2f} < "
                    f"{SAME_PERSON_MIN}); nothing written (add --force if they are)")


def samples_from_images(app: App, paths: list[str] | list[Path]) -> list[Sample]:
    """Check every image before anything is written: a bad one stops the whole enrolment."""
    # Decode all first: a missing or broken file is reported before the model is even loaded.
    images = [(str(path), read_image(path)) for path in expand_images([str(p) for p in paths])]
    return [Sample(pick_face(app.recognizer.analyze(image, still=True), path), path,
                   hashlib.sha256(image.tobytes()).hexdigest())
            for path, image in images]


def samples_from_source(app: App, spec: str, count: int, min_quality: float, timeout: float,
                        say: Callable[[str], None] = lambda text: None) -> list[Sample]:
    """Up to ``count`` good frames from a camera, a file or a folder: one dominant face, quality
    >= ``min_quality``, the same person as the frames before (someone walking past the camera
    is not enrolled), video frames a few apart. A countdown first for a live camera, told
    through ``say``."""
    cam = app.cfg.camera
    source = open_source(spec, cam.width, cam.height, cam.fps)
    # Consecutive video frames are near duplicates; a folder's photos are not.
    spacing = 1 if isinstance(source, ImageFolderSource) else FRAME_SPACING
    samples: list[Sample] = []
    last = -spacing
    try:
        if source.live:
            _countdown(source, say)
        deadline = time.monotonic() + timeout
        # disable=None: no bar when stderr is not a terminal (logs stay clean).
        with tqdm(total=count, desc="good frames", unit="frame", file=sys.stderr,
                  leave=False, disable=None) as bar:
            while len(samples) < count and time.monotonic() < deadline:
                frame = source.read()
                if frame is None:
                    break
                if frame.index - last < spacing:
                    continue
                face = dominant_face(app.recognizer.analyze(frame.image, embed=False))
                if face is None or face.quality < min_quality:
                    bar.set_postfix_str("no single face" if face is None
                                        else f"quality {face.quality:.2f} < {min_quality}")
                    continue
                face.embedding = app.embedder.embed([face.crop])[0]
                if samples and not same_person(samples, face, app.threshold.one_to_one()):
                    bar.set_postfix_str("a different face: skipped")
                    continue
                samples.append(Sample(face, f"{source.name}#{frame.index}"))
                last = frame.index
                bar.set_postfix_str(f"quality {face.quality:.2f}")
                bar.update(1)
    finally:
        source.close()
    if len(samples) < count:
        raise UserError(f"only {len(samples)} of {count} good frames from {spec} "
                        f"(one clear face, quality >= {min_quality}); nothing written: face the "
                        "camera in good light, or lower --count / --min-quality")
    return samples


def same_person(samples: list[Sample], face: FaceResult, threshold: float) -> bool:
    """The face matches the mean of the samples so far at the recognition threshold for one
    comparison (``Threshold.one_to_one``: with auto, a stranger passes at false_accept)."""
    mean = np.mean([s.result.embedding for s in samples], axis=0)
    return float(face.embedding @ mean) / max(float(np.linalg.norm(mean)), 1e-12) >= threshold


def _countdown(source: FrameSource, say: Callable[[str], None]) -> None:
    """Count down while reading (and dropping) frames, so the camera's buffer is fresh when
    collection starts."""
    for n in range(COUNTDOWN_S, 0, -1):
        say(f"look at the camera: {n}...")
        end = time.monotonic() + 1.0
        while time.monotonic() < end and source.read() is not None:
            pass


def enroll_samples(gallery: Gallery, name: str, samples: list[Sample],
                   notes: str | None = None) -> int:
    return gallery.enroll(name, np.stack([s.result.embedding for s in samples]).astype(np.float32),
                          crops=[s.result.crop for s in samples],
                          sources=[s.source for s in samples],
                          qualities=[float(s.result.quality) for s in samples], notes=notes)


@dataclass
class Enrolled:
    name: str  # the stored spelling (an existing person's, whatever case was typed)
    faces: int
    skipped: list[str]  # sources left out as repeats


def enroll_person(app: App, name: str, samples: list[Sample], *, force: bool = False,
                  notes: str | None = None) -> Enrolled:
    """Check ``samples`` against each other and against the person already enrolled under
    ``name`` (any case), drop repeats, then write them in one transaction."""
    existing = app.gallery(create=False)
    person = existing.find_person(name) if existing is not None else None
    enrolled = existing.embeddings_of(person.name) if existing is not None and person else \
        np.zeros((0, 0), np.float32)
    samples, skipped = drop_duplicates(samples, enrolled)
    shown = person.name if person else name
    if not samples:
        raise UserError(f"nothing new to enrol for {shown}: {', '.join(skipped)} "
                        "already enrolled or given twice")
    if not force:
        check_same_person(samples, enrolled, shown)
    gallery = app.gallery()
    assert gallery is not None
    enroll_samples(gallery, name, samples, notes)
    return Enrolled(person.name if person else validate_name(name), len(samples), skipped)


def people_in_folder(root: Path) -> list[tuple[str, Path]]:
    """(name, folder) for each subfolder of ``root``: the subfolder's name is the person's."""
    if not root.is_dir():
        raise UserError(f"{root}: not a folder (--folder takes a folder of one subfolder per "
                        "person)")
    found = sorted((p.name.strip(), p) for p in root.iterdir() if p.is_dir())
    if not found:
        raise UserError(f"{root}: no subfolders (one per person, named after them, holding "
                        "their photos)")
    return found


def enroll_folder(app: App, root: Path, *, force: bool = False,
                  say: Callable[[str], None] = lambda text: None
                  ) -> tuple[list[Enrolled], list[tuple[str, str]]]:
    """One person per subfolder, each in its own transaction; a person whose photos fail the
    checks is skipped (``say`` tells why) and the rest go on. (enrolled, [(name, why)])."""
    done: list[Enrolled] = []
    skipped: list[tuple[str, str]] = []
    people = people_in_folder(root)
    # disable=None: a bar only on a terminal.
    for name, folder in tqdm(people, desc="people", unit="person", file=sys.stderr,
                             leave=False, disable=None):
        try:
            done.append(enroll_person(app, validate_name(name),
                                      samples_from_images(app, [folder]), force=force))
        except (UserError, GalleryError) as e:
            why = " ".join(str(e).split())
            skipped.append((name, why))
            say(f"skipped {name or folder.name!r}: {why}")
    return done, skipped

