#!/usr/bin/env bash
# The CPU BERT table of docs/bert.md: transformers' BertModel and `realm bench bert` on one model,
# forward and forward+backward, each row measured back to back in one run so that their ratio is
# fair. Medians. Needs a release build of realm and a Python with torch and transformers:
# PYTHON=/path/to/python. MODEL defaults to ../shared/models/all-minilm-l6-v2.
set -euo pipefail
cd "$(dirname "$0")/../.."
realm="${REALM:-${CARGO_TARGET_DIR:-target}/release/realm}"
python="${PYTHON:-python3}"
model="${MODEL:-../shared/models/all-minilm-l6-v2}"
secs="${SECONDS_PER_POINT:-10}"
tokens_per_s() { awk -v b="$1" -v l="$2" -v ms="$3" 'BEGIN { printf "%.0f", b * l / (ms / 1e3) }'; }
ms() { "$realm" bench bert --device cpu --model "$model" --json --seconds "$secs" "$@" | sed -E 's/.*"median_ms": *([0-9.e+-]+).*/\1/'; }
printf '| shape | PyTorch fwd | realm fwd | ratio | PyTorch fwd+bwd | realm fwd+bwd | ratio |\n|---|---:|---:|---:|---:|---:|---:|\n'
for row in "32 128" "8 288"; do
  read -r b l <<<"$row"
  torch_json="$("$python" scripts/bench/torch_bert_cpu.py "$model" "$b" "$l" "$secs")"
  tf="$(sed -E 's/.*"fwd_ms": *([0-9.e+-]+).*/\1/' <<<"$torch_json")"
  tb="$(sed -E 's/.*"fwd_bwd_ms": *([0-9.e+-]+).*/\1/' <<<"$torch_json")"
  rf="$(ms --batch "$b" --len "$l")"
  rb="$(ms --batch "$b" --len "$l" --backward)"
  printf '| b=%s, l=%s | %s | %s | %.2fx | %s | %s | %.2fx |\n' "$b" "$l" \
    "$(tokens_per_s "$b" "$l" "$tf")" "$(tokens_per_s "$b" "$l" "$rf")" "$(awk -v a="$tf" -v b="$rf" 'BEGIN{print a/b}')" \
    "$(tokens_per_s "$b" "$l" "$tb")" "$(tokens_per_s "$b" "$l" "$rb")" "$(awk -v a="$tb" -v b="$rb" 'BEGIN{print a/b}')"
done
echo "(tokens/s from median times; $("$python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
