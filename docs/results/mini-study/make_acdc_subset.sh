#!/usr/bin/env bash
# The ACDC subset of the mini-study: every slice of 16 patients (every 6th of the 100), linked (not copied) from
# ../shared/datasets/acdc into runs/data/acdc16 (git-ignored). No split.json: the study's folds are made by
# patient (group_regex), so no patient's slices fall on both sides of a split.
set -euo pipefail
cd "$(dirname "$0")/../../.."
src=$(cd ../shared/datasets/acdc && pwd)
dest=runs/data/acdc16
rm -rf "$dest" && mkdir -p "$dest/images" "$dest/masks"
for n in $(seq 1 6 96); do
  p=$(printf 'patient%03d' "$n")
  for f in "$src"/images/"$p"_*.png; do
    id=$(basename "$f")
    ln -s "$f" "$dest/images/$id"
    ln -s "$src/masks/$id" "$dest/masks/$id"
  done
done
cat > "$dest/meta.json" <<JSON
{"name": "acdc16", "classes": ["background", "right_ventricle", "myocardium", "left_ventricle"],
 "group_regex": "^(patient\\\\d+)", "note": "16 ACDC patients (every 6th), linked from ../shared/datasets/acdc"}
JSON
echo "$dest: $(ls "$dest/images" | wc -l) slices of $(ls "$dest/images" | sed 's/_frame.*//' | sort -u | wc -l) patients"
