#!/usr/bin/env bash
# The packages the GPU machine lacks (shared/GPU.md), as Python 3.12 manylinux wheels, into
# bench/gpu/wheels/ (git-ignored; carried to the GPU machine with the working tree).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 -d wheels \
  "keras==3.15.1" "namex==0.1.0" "optree==0.20.0" "pydantic==2.14.4" "pydantic-core==2.50.5" \
  "annotated-types==0.8.0" "typing-inspection==0.4.5"
ls -l wheels
