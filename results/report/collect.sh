#!/usr/bin/env bash
# Copy the evidence of every run (config.json, summary.json, metrics.jsonl; no checkpoints) from
# the runs' folder into this one, replacing what was here of those runs; runs that are here but
# not there (made on an earlier machine) stay as they are. usage: collect.sh [RUNS [DEST]]
set -eu
runs=${1:-/work/runs/report}
dest=${2:-$(cd "$(dirname "$0")" && pwd)}
for run in "$runs"/*/seed*/; do
  [ -f "$run/config.json" ] || continue
  rel=${run#"$runs"/}
  rm -rf "${dest:?}/$rel"
  mkdir -p "$dest/$rel"
  for f in config.json summary.json metrics.jsonl; do
    [ -f "$run/$f" ] && cp "$run/$f" "$dest/$rel/"
  done
done
find "$dest" -mindepth 1 -type d -empty -delete
