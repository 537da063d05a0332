#!/bin/sh
# Builds jomo with the clamp on its categorical latents removed, into a private R library, for
# `python benchmarks/bench_ess.py --jomo-lib LIB`. jomo keeps a nominal latent's draw only inside
# (-3, 4) (`if ((minim>-3)&(maxim<4))` in its src/*.c), which changes the posterior where a
# category is rare (on JSPmiss the level-2 variances of fluent's latents: 0.08 with the clamp,
# 0.47-0.60 without it and in mlimpute) and so the mixing being compared; this build widens the
# bounds to (-1e6, 1e6) and changes nothing else (the rejection loops keep their 10,000-try cap).
#
# usage: sh benchmarks/r/build_jomo_unclamped.sh SOURCE LIB
#   SOURCE  jomo 2.7-4's source (what r-cran-jomo installs): a directory or CRAN's
#           jomo_2.7-4.tar.gz (cran.r-project.org/src/contrib/Archive/jomo/, or the 2.7-4 tag of
#           github.com/cran/jomo)
#   LIB     the library to install into (R's lib.loc); the system library is not touched
set -e
src=$1
lib=$2
[ -n "$src" ] && [ -n "$lib" ] || { echo "usage: $0 SOURCE LIB" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -d "$src" ]; then cp -r "$src" "$work/jomo"; else tar -xzf "$src" -C "$work"; fi
grep -q "Version: 2.7-4" "$work/jomo/DESCRIPTION" || echo "warning: not jomo 2.7-4 (the clamp count below may differ)" >&2
sed -i 's/(minim>-3)&(maxim<4)/(minim>-1e6)\&(maxim<1e6)/g' "$work"/jomo/src/*.c
count=$(cat "$work"/jomo/src/*.c | grep -o "(minim>-1e6)&(maxim<1e6)" | wc -l)
left=$(cat "$work"/jomo/src/*.c | grep -o "(minim>-3)&(maxim<4)" | wc -l)
[ "$count" -eq 13 ] && [ "$left" -eq 0 ] || { echo "expected 13 clamps in jomo 2.7-4's src/*.c, patched $count, $left left" >&2; exit 1; }
mkdir -p "$lib"
R CMD INSTALL --no-test-load -l "$lib" "$work/jomo"
