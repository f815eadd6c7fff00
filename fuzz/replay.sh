#!/usr/bin/env bash
# Runs every fuzz target once over its committed corpus (fuzz/corpus/):
# non-zero on any crash. See run.sh.
exec "$(dirname "$0")/run.sh" --replay "$@"
