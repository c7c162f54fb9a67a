#!/usr/bin/env bash
# The CPU attention table of docs/attention.md: PyTorch's SDPA and `realm bench attention` on the
# issue's shapes, each row measured back to back in one run so their ratio is fair on a shared
# machine. STAT=min_ms (default) compares the fastest run of each, which load on a shared machine
# disturbs least; STAT=median_ms the medians. Needs a release build of realm and a Python with torch: PYTHON=/path/to/python.
set -euo pipefail
cd "$(dirname "$0")/../.."
realm="${REALM:-${CARGO_TARGET_DIR:-target}/release/realm}"
python="${PYTHON:-python3}"
secs="${SECONDS_PER_POINT:-3}"
stat="${STAT:-min_ms}"
ms() { "$realm" bench attention --device cpu --json --seconds "$secs" "$@" | sed -E "s/.*\"$stat\": *([0-9.e+-]+).*/\\1/"; }
printf '| shape | pad | PyTorch fwd | realm fwd | PyTorch fwd+bwd | realm fwd+bwd |\n|---|---:|---:|---:|---:|---:|\n'
for row in "8 128 0" "8 288 0" "4 512 0" "8 128 0.5" "8 288 0.5" "4 512 0.5"; do
  read -r b l pad <<<"$row"
  torch_json="$("$python" scripts/bench/torch_attention_cpu.py "$b" "$l" "$pad" "$secs")"
  tstat="${stat/median_/}"
  tf="$(sed -E "s/.*\"fwd_$tstat\": *([0-9.e+-]+).*/\\1/" <<<"$torch_json")"
  tb="$(sed -E "s/.*\"fwd_bwd_$tstat\": *([0-9.e+-]+).*/\\1/" <<<"$torch_json")"
  rf="$(ms --batch "$b" --len "$l" --pad-frac "$pad")"
  rb="$(ms --batch "$b" --len "$l" --pad-frac "$pad" --backward)"
  awk -v b="$b" -v l="$l" -v p="$pad" -v tf="$tf" -v rf="$rf" -v tb="$tb" -v rb="$rb" \
    'BEGIN { printf "| b=%s, l=%s | %s | %.2f | %.2f (%.2fx) | %.2f | %.2f (%.2fx) |\n", b, l, p, tf, rf, tf/rf, tb, rb, tb/rb }'
done
