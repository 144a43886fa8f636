"""The ``edgeface-cam`` command line (placeholder until the device-app issue lands)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgeface-cam", description=__doc__)
    parser.parse_args(argv)
    return 0
