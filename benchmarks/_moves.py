"""The ``--off`` option of the mixing benchmarks: switch sampler moves off to measure what they
buy (the categorical latents' scale moves, ``mlimpute/sampler/expansion.py``; the random
effects' scale move, ``random.scale_move``; the rare categories' collapsed moves,
``mlimpute/sampler/collapsed.py``)."""

from __future__ import annotations

import argparse

MOVES = ("expansion", "scale-move", "collapsed")


def add_off_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--off", nargs="*", default=[], choices=MOVES,
                    help="switch these moves off (the categorical latents' scales, the random effects' scale, "
                         "the rare categories' collapsed moves)")


def switch_off(names) -> None:
    from mlimpute.sampler import collapsed, expansion, random
    expansion.ENABLED = "expansion" not in names
    collapsed.ENABLED = "collapsed" not in names
    if "scale-move" in names:
        random.SCALE_SCANS = 0
