#!/usr/bin/env bash
# The HC18 subset of the mini-study: every image of the subjects whose number is a multiple of 4 (250 of the 999
# images), linked (not copied) from ../shared/datasets/hc18 into runs/data/hc18q (git-ignored). A subject's second
# scan (NNN_2HC) stays with its first (group_regex), so no fetus falls on both sides of a split.
set -euo pipefail
cd "$(dirname "$0")/../../.."
src=$(cd ../shared/datasets/hc18 && pwd)
dest=runs/data/hc18q
rm -rf "$dest" && mkdir -p "$dest/images" "$dest/masks"
for f in "$src"/images/*.png; do
  id=$(basename "$f")
  n=$((10#${id%%_*}))
  if (( n % 4 == 0 )); then
    ln -s "$f" "$dest/images/$id"
    ln -s "$src/masks/$id" "$dest/masks/$id"
  fi
done
cat > "$dest/meta.json" <<JSON
{"name": "hc18q", "classes": ["background", "fetal_head"], "group_regex": "^(\\\\d+)_",
 "note": "HC18 subjects whose number is a multiple of 4, linked from ../shared/datasets/hc18"}
JSON
echo "$dest: $(ls "$dest/images" | wc -l) images of $(ls "$dest/images" | sed 's/_.*//' | sort -u | wc -l) subjects"
