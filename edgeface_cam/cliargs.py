"""The command line's plumbing: argument types that refuse bad values in one line, and the
parser that adds each subcommand with the common options, a summary and examples."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from typing import Any, NoReturn

from . import PROG

EXIT_USER = 2


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line (its default prints the usage too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER, f"{self.prog}: error: {message} (see --help)\n")


def path_arg(text: str) -> str:
    """A path or source spec: an empty one is a mistake (it would silently mean "the default")."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a path (an option left out means its "
                                         "default)")
    return text


def _number(text: str, lo: float, hi: float, lo_open: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (lo < value if lo_open else lo <= value) or not value <= hi:
        left = "more than" if lo_open else "at least"
        raise argparse.ArgumentTypeError(f"{text!r} must be {left} {lo:g}"
                                         + (f" and at most {hi:g}" if hi < float("inf") else ""))
    return value


def fraction(text: str) -> float:
    return _number(text, 0.0, 1.0)


def positive_float(text: str) -> float:
    return _number(text, 0.0, float("inf"), lo_open=True)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def unit_float(text: str) -> float:
    return _number(text, -1.0, 1.0)


def threshold_arg(text: str) -> float | str:
    """``auto`` (from the model card's calibration, for the gallery held) or a cosine -1..1."""
    return "auto" if text.strip().lower() == "auto" else _number(text, -1.0, 1.0)


class Commands:
    """Adds subcommands, each with the common options, a summary and examples."""

    def __init__(self, sub: Any, common: argparse.ArgumentParser,
                 as_json: argparse.ArgumentParser) -> None:
        self.sub, self.common, self.as_json = sub, common, as_json

    def add(self, name: str, func: Callable[..., int], summary: str, examples: str,
            json_flag: bool = False) -> argparse.ArgumentParser:
        parents = [self.common, self.as_json] if json_flag else [self.common]
        p = self.sub.add_parser(name, help=summary, description=textwrap.fill(summary, 79),
                                parents=parents,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n" + "\n".join(
                                    f"  {PROG} {line}" for line in examples.strip().splitlines()))
        p.set_defaults(func=func)
        return p
