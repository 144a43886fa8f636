"""The gallery: enrolled people and their embeddings in SQLite, matched from an in-memory matrix.

- ``store``: the SQLite file (connection, WAL, busy timeout, migrations via PRAGMA
  user_version); all of the gallery's SQL, and ``inspect`` for doctor.
- ``index``: the in-memory match index.
- ``core.Gallery`` composes them; ``base`` holds the error, the records and the name rule.
"""

from .base import MAX_NAME_LENGTH, GalleryError, Match, Person, name_key, validate_name
from .core import Gallery, default_threshold
from .store import SCHEMA_VERSION, GalleryReport, inspect

__all__ = ["MAX_NAME_LENGTH", "SCHEMA_VERSION", "Gallery", "GalleryError", "GalleryReport",
           "Match", "Person", "default_threshold", "inspect", "name_key", "validate_name"]
