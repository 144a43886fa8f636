"""The face library's commands: sightings, unknowns, assign, not, ignore, forget, backup, restore.

Thin like the rest of the CLI: the gallery's ``library`` does the work (one transaction per
action, stale ids refused with a did-you-mean), ``report`` shapes the output (the --json field
names are a contract), ``enroll`` checks that assigned faces look like one person.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .app import App, UserError
from .cliargs import path_arg, positive_int
from .config import Config
from .enroll import Sample, check_same_person, drop_duplicates
from .gallery import Gallery
from .gallery.library import Library, backup, restore
from .recognize import FaceResult
from .report import group_json, group_text, print_json, sighting_json, sighting_text


def _library(app: App) -> tuple[Gallery, Library]:
    gallery = app.existing_gallery()
    return gallery, Library(gallery)


def cmd_sightings(args: argparse.Namespace, cfg: Config) -> int:
    with App(cfg, args.db) as app:
        gallery = app.gallery(create=False)
        rows = [] if gallery is None else Library(gallery).sightings(
            args.name, args.unknown, args.since, args.limit)
    if args.json:
        print_json([sighting_json(r) for r in rows])
        return 0
    for r in rows:
        print(sighting_text(r))
    print(f"{len(rows)} sighting(s) in {app.db_path}")
    return 0


def cmd_unknowns(args: argparse.Namespace, cfg: Config) -> int:
    with App(cfg, args.db) as app:
        gallery = app.gallery(create=False)
        groups = [] if gallery is None else Library(gallery).groups(args.all)
    if args.json:
        print_json([group_json(g) for g in groups])
        return 0
    for g in groups:
        print(group_text(g))
    print(f"{len(groups)} group(s) of unknown faces in {app.db_path}"
          + ("" if args.all else " (ignored ones hidden: --all shows them)"))
    return 0


def cmd_assign(args: argparse.Namespace, cfg: Config) -> int:
    with App(cfg, args.db) as app:
        gallery, library = _library(app)
        faces = library.faces_for(args.cluster, args.sighting)
        person = gallery.find_person(args.name)
        near = gallery.suggest(args.name) if person is None else None
        enrolled = gallery.embeddings_of(person.name) if person else np.zeros((0, 0), np.float32)
        # The same checks as enroll: the faces look like each other and like the person.
        samples = [Sample(FaceResult(None, None, np.frombuffer(f["vector"], np.float32),  # type: ignore[arg-type]
                                     float(f["quality"] or 0.0)), f"sighting {f['id']}")
                   for f in faces]
        kept, skipped = drop_duplicates(samples, enrolled)
        if not kept:
            raise UserError(f"nothing new to enrol: {', '.join(skipped)} already enrolled")
        if not args.force:
            check_same_person(kept, enrolled, person.name if person else args.name)
        keep = {s.source for s in kept}
        name = library.assign(args.name, [f for f in faces if f"sighting {f['id']}" in keep],
                              cluster=args.cluster, sighting=args.sighting)
    what = f"group {args.cluster}" if args.cluster is not None else f"sighting {args.sighting}"
    print(f"assigned {what} to {name}: {len(kept)} face(s) enrolled")
    if person is None and near:
        print(f"note: {name!r} is a new person (did you mean {near!r}? `rename` fixes a "
              "misspelling)", file=sys.stderr)
    return 0


def cmd_not(args: argparse.Namespace, cfg: Config) -> int:
    with App(cfg, args.db) as app:
        name = _library(app)[1].mark_not(args.sighting, args.name)
    print(f"sighting {args.sighting} is not {name}: stored as a negative of {name}; it is now "
          "an unknown face")
    return 0


def cmd_ignore(args: argparse.Namespace, cfg: Config) -> int:
    with App(cfg, args.db) as app:
        _library(app)[1].ignore(args.cluster)
    print(f"group {args.cluster} ignored: hidden from unknowns (--all shows it); its new faces "
          "join it quietly")
    return 0


def cmd_forget(args: argparse.Namespace, cfg: Config) -> int:
    with App(cfg, args.db) as app:
        n = _library(app)[1].forget(args.sighting, args.before, args.unknown)
    print(f"forgot {n} sighting(s)")
    return 0


def cmd_backup(args: argparse.Namespace, cfg: Config) -> int:
    with App(cfg, args.db) as app:
        dest = backup(app.existing_gallery(), args.file)
    print(f"backed up {app.db_path} to {dest}")
    return 0


def cmd_restore(args: argparse.Namespace, cfg: Config) -> int:
    app = App(cfg, args.db)
    people = restore(Path(args.file), app.db_path)
    print(f"restored {args.file} into {app.db_path} ({people} people)")
    return 0


def add_library_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("sightings", cmd_sightings, "List the stored sightings (every decided track), newest "
            "first.", "sightings\nsightings --unknown --since 2h\nsightings --name Ada --json "
            "--limit 20", json_flag=True)
    who = p.add_mutually_exclusive_group()
    who.add_argument("--name", help="only this person's")
    who.add_argument("--unknown", action="store_true", help="only unknown faces")
    p.add_argument("--since", metavar="WHEN", help="ISO time or an age: 30m, 2h, 7d, 1w")
    p.add_argument("--limit", type=positive_int, metavar="N", help="at most N")

    p = add("unknowns", cmd_unknowns, "List the groups of unknown faces, largest first.",
            "unknowns\nunknowns --all --json", json_flag=True)
    p.add_argument("--all", action="store_true", help="also the ignored groups")

    p = add("assign", cmd_assign, "This is NAME: enrol a group's (or one sighting's) best faces "
            "(at most 10) as a person, new or existing.",
            "assign --cluster 3 --name Ada\nassign --sighting 120 --name \"Ada Lovelace\"")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--cluster", type=positive_int, metavar="ID", help="a group (unknowns)")
    what.add_argument("--sighting", type=positive_int, metavar="ID", help="one sighting")
    p.add_argument("--name", required=True)
    p.add_argument("--force", action="store_true",
                   help="enrol even if the faces do not look like the same person")

    p = add("not", cmd_not, "This is not NAME: the sighting's face becomes a negative of NAME "
            "(faces more like it than like NAME are not called NAME); it joins the unknowns.",
            "not --sighting 120 --name Ada")
    p.add_argument("--sighting", type=positive_int, metavar="ID", required=True)
    p.add_argument("--name", required=True)

    p = add("ignore", cmd_ignore, "Hide a group of unknown faces (a poster, the postman); its "
            "new faces join it quietly and their events say \"ignored\": true.",
            "ignore --cluster 7")
    p.add_argument("--cluster", type=positive_int, metavar="ID", required=True)

    p = add("forget", cmd_forget, "Delete sightings: one, those before a time, or every unknown "
            "one.", "forget --sighting 120\nforget --before 7d\nforget --unknown")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--sighting", type=positive_int, metavar="ID")
    what.add_argument("--before", metavar="WHEN", help="ISO time or an age: 30m, 2h, 7d, 1w")
    what.add_argument("--unknown", action="store_true", help="every unknown sighting")

    p = add("backup", cmd_backup, "Copy the whole library (people, faces, sightings, groups, "
            "negatives) to FILE; safe while the service runs.", "backup gallery-backup.db")
    p.add_argument("file", type=path_arg, metavar="FILE")

    p = add("restore", cmd_restore, "Replace the library with a backup FILE (refused unless it "
            "is a gallery; the old one stays until the new one is in place).",
            "restore gallery-backup.db")
    p.add_argument("file", type=path_arg, metavar="FILE")
