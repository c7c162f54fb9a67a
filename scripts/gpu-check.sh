#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (no Rust there): runs the release binary built
# here with `cargo build --release --features cuda`, its selftest on the GPU and the benchmarks,
# plus PyTorch's baselines on the same card, and prints a short summary last.
#
#   scripts/gpu-check.sh [path/to/realm]   (default: target/release/realm, or $REALM_BIN)
#
# Results go to $OUT (or ./gpu-check-out) as JSON lines; record them in docs/gpu-results.md.
set -uo pipefail
BIN="${1:-${REALM_BIN:-target/release/realm}}"
OUT="${OUT:-./gpu-check-out}"
mkdir -p "$OUT"
[[ -x "$BIN" ]] || { echo "gpu-check: no executable at $BIN (build it with --features cuda and carry it)"; exit 2; }

# The CUDA libraries candle links (cuBLAS, cuRAND, NVRTC) live in the PyTorch venv's wheels.
PY=/opt/torch/.venv/bin/python3
[[ -x "$PY" ]] || PY=python3
SITE="$($PY -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)"
for d in "$SITE"/nvidia/*/lib "$SITE"/nvidia/cu13/lib; do
  [[ -d "$d" ]] && LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export LD_LIBRARY_PATH

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
status=0

echo "== selftest"
timeout 180 "$BIN" selftest --device cuda | tee "$OUT/selftest.txt"
selftest_rc=${PIPESTATUS[0]}
[[ $selftest_rc -eq 0 ]] || status=1

echo "== benchmarks"
bench() { timeout 60 "$BIN" bench "$@" --device cuda --json --seconds 1 | tee -a "$OUT/bench.jsonl" || status=1; }
for k in 8 5000; do
  for dir in "" "--backward"; do
    bench doc-softmax --batch 512 --k "$k" $dir
    bench doc-softmax --batch 512 --k "$k" $dir --composition
  done
done
# Exact MIPS top-k over REALM's index shape (13M × 128 f16): the issue's Q and k points.
for q in 1 64 256 1024; do bench mips --docs 13000000 --dim 128 --queries "$q" --k 8 --dtype f16; done
bench mips --docs 13000000 --dim 128 --queries 256 --k 5000 --dtype f16
# LayerNorm and GELU on BERT-base's activations (32 × 128 tokens; GELU on the 3072-wide FFN).
for dt in f32 bf16; do
  for dir in "" "--backward"; do
    bench nn --op layer-norm --rows 4096 --hidden 768 --dtype "$dt" $dir
    bench nn --op layer-norm --rows 4096 --hidden 768 --dtype "$dt" $dir --composition
    bench nn --op gelu-erf --rows 4096 --hidden 3072 --dtype "$dt" $dir
    bench nn --op gelu-erf --rows 4096 --hidden 3072 --dtype "$dt" $dir --composition
    bench nn --op gelu-tanh --rows 4096 --hidden 3072 --dtype "$dt" $dir
  done
done
# Hidden-state dropout, BERT-base's b·l × 768: the device-drawn mask against the host mask + upload.
for c in "" "--composition"; do bench dropout --rows 2304 --hidden 768 --dtype bf16 $c; done
# Ops that register later add their lines here (attention, bert, train-step).

echo "== PyTorch baselines (same card)"
timeout 120 "$PY" "$(dirname "$0")/gpu/torch_baselines.py" | tee "$OUT/torch.jsonl" || status=1

echo "== summary"
echo "selftest: $(tail -n 1 "$OUT/selftest.txt" 2>/dev/null) (exit $selftest_rc)"
"$PY" - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for name in ["bench.jsonl", "torch.jsonl"]:
    p = out / name
    if not p.exists():
        continue
    for line in p.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        print(f"{r.get('op','?'):<48} {r.get('shape',''):<22} {r.get('dtype',''):<5} {r.get('median_ms', float('nan')):9.4f} ms")
PY
exit $status
