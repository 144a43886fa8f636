"""The gallery: enrolled people and their embeddings in SQLite, matched from an in-memory matrix.

- ``store``: the SQLite file (connection, WAL, busy timeout, migrations via PRAGMA
  user_version); all of the gallery's SQL, and ``inspect`` for doctor.
- ``index``: the in-memory match index.
- ``core.Gallery`` composes them; ``base`` holds the error, the records and the name rule.
- the face library: ``sightings`` (the recorder: every decided track, retention), ``groups``
  (unknown faces grouped), ``library.Library`` (list, assign, not, ignore, forget, backup).
"""

from .base import MAX_NAME_LENGTH, GalleryError, Match, Person, name_key, validate_name
from .core import Gallery, default_threshold
from .library import Library, backup, parse_when, restore
from .sightings import Retention, SightingRecorder
from .store import SCHEMA_VERSION, GalleryReport, inspect

__all__ = ["MAX_NAME_LENGTH", "SCHEMA_VERSION", "Gallery", "GalleryError", "GalleryReport",
           "Library", "Match", "Person", "Retention", "SightingRecorder", "backup",
           "default_threshold", "inspect", "name_key", "parse_when", "restore", "validate_name"]
