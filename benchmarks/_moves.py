"""The ``--off`` option of the mixing benchmarks: switch sampler moves off to measure what they
buy (the categorical latents' scale moves, ``mlimpute/sampler/expansion.py``; the random
effects' scale move, ``random.scale_move``)."""

from __future__ import annotations

import argparse

MOVES = ("expansion", "scale-move")


def add_off_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--off", nargs="*", default=[], choices=MOVES,
                    help="switch these moves off (the categorical latents' scales, the random effects' scale)")


def switch_off(names) -> None:
    from mlimpute.sampler import expansion, random
    expansion.ENABLED = "expansion" not in names
    if "scale-move" in names:
        random.SCALE_SCANS = 0
