#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (no Rust there): runs the release binary built
# here with `cargo build --release --features cuda`, its selftest on the GPU and the benchmarks,
# plus PyTorch's baselines on the same card, and prints a short summary last. A `cuda,nccl` build
# (what CI builds) runs too where PyTorch's wheels bring libnccl.so.2, and its selftest then
# checks NCCL on the GPU as well.
#
#   scripts/gpu-check.sh [--device cuda|emulate] [path/to/realm or realm.gz]
#       (default: cuda and target/release/realm, or $REALM_CHECK_DEVICE and $REALM_BIN)
#
# `--device emulate` runs the same steps at tiny sizes on the CPU emulator of the kernels (a
# binary built with `--features emulate`, no GPU): CI runs it so that the script itself is
# tested. What needs a GPU or PyTorch (nvidia-smi, compute-sanitizer, the torch baselines) is
# skipped there with the reason printed.
#
# The whole call keeps within GPU_CHECK_SECONDS (default 470, under 8 minutes): each command's
# time limit is cut to what is left, and what no longer fits is skipped, both reported as
# incomplete (not as failures). GPU_CHECK_STEPS picks steps (default: all, "selftest bench torch
# demo sanitizer", in that order), so that a lent machine's minutes can be spent in two calls
# with the same $OUT; the summary at the end reads whatever $OUT holds.
#
# Results go to $OUT (or ./gpu-check-out) as JSON lines; record them in docs/gpu-results.md.
set -uo pipefail
DEVICE="${REALM_CHECK_DEVICE:-cuda}"
if [[ "${1:-}" == "--device" ]]; then DEVICE="${2:-}"; shift 2; fi
case "$DEVICE" in
  cuda|emulate) ;;
  *) echo "gpu-check: --device must be cuda or emulate, not '$DEVICE'"; exit 2 ;;
esac
BIN="${1:-${REALM_BIN:-target/release/realm}}"
STEPS="${GPU_CHECK_STEPS:-selftest bench torch demo sanitizer}"
for step in $STEPS; do
  case "$step" in
    selftest|bench|torch|demo|sanitizer) ;;
    *) echo "gpu-check: GPU_CHECK_STEPS: unknown step '$step' (selftest bench torch demo sanitizer)"; exit 2 ;;
  esac
done
DEADLINE="${GPU_CHECK_SECONDS:-470}"
[[ "$DEADLINE" =~ ^[0-9]+$ ]] || { echo "gpu-check: GPU_CHECK_SECONDS must be a whole number of seconds, not '$DEADLINE'"; exit 2; }
OUT="${OUT:-./gpu-check-out}"
mkdir -p "$OUT"
# A gzipped binary (how it is carried to a GPU machine: the stripped cuda build is 73 MB, 19 MB
# gzipped) is unpacked into $OUT first.
if [[ "$BIN" == *.gz && -f "$BIN" ]]; then
  gunzip -c "$BIN" > "$OUT/realm" && chmod +x "$OUT/realm" && BIN="$OUT/realm"
fi
[[ -x "$BIN" ]] || { echo "gpu-check: no executable at $BIN (build it with --features cuda, or emulate for --device emulate)"; exit 2; }
emulate() { [[ "$DEVICE" == emulate ]]; }
skip() { echo "skipped: $*"; }
# A size: the first on a GPU, the second (tiny) on the emulator.
size() { if emulate; then echo "$2"; else echo "$1"; fi; }

# The CUDA libraries candle links (cuBLAS, cuRAND, NVRTC) live in the PyTorch venv's wheels.
PY=/opt/torch/.venv/bin/python3
[[ -x "$PY" ]] || PY=python3
SITE="$($PY -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)"
for d in "$SITE"/nvidia/*/lib "$SITE"/nvidia/cu13/lib; do
  [[ -d "$d" ]] && LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export LD_LIBRARY_PATH

if emulate; then
  skip "nvidia-smi (--device emulate)"
  echo "device: the kernel emulator" > "$OUT/gpu.txt"
else
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
fi
status=0
incomplete=0
selftest_rc="not run"

# Sets T to the seconds the next command ($2, for messages) may take: at most $1, and what is
# left of the call's budget; fails, saying so, when less than 5 s are left.
allow() {
  local left=$((DEADLINE - SECONDS))
  T=$((left < $1 ? left : $1))
  if ((T < 5)); then
    echo "incomplete: $2 skipped, the call's $DEADLINE s are spent"
    incomplete=1
    return 1
  fi
}
# How a command run under `timeout $T` ended: $1 its exit status, $2 its name, $3 the limit it
# asked `allow` for. Stopped by the budget: incomplete; any other non-zero status: a failure.
ended() {
  (($1 == 0)) && return 0
  if (($1 == 124 && T < $3)); then
    echo "incomplete: $2 stopped when the call's $DEADLINE s ran out"
    incomplete=1
  else
    echo "FAILED: $2 (exit $1)"
    status=1
  fi
}

step_selftest() {
  echo "== selftest"
  : > "$OUT/selftest.txt"
  selftest_rc=0
  if emulate; then
    # Only the kernels whose cases are quick on the emulator (the others run in `cargo test`).
    for f in doc_softmax layer_norm gelu dropout adamw conformance; do
      allow 180 "selftest $f" || return 0
      timeout "$T" "$BIN" selftest --device emulate --filter "$f" 2>&1 | tee -a "$OUT/selftest.txt"
      local rc=${PIPESTATUS[0]}
      ((rc == 0)) || selftest_rc=$rc
      ended "$rc" "selftest $f" 180
    done
  else
    allow 180 selftest || return 0
    timeout "$T" "$BIN" selftest --device cuda 2>&1 | tee "$OUT/selftest.txt"
    selftest_rc=${PIPESTATUS[0]}
    ended "$selftest_rc" selftest 180
  fi
}

SECONDS_PER_BENCH="$(size 1 0.05)"
bench() {
  allow 60 "bench $*" || return 0
  timeout "$T" "$BIN" bench "$@" --device "$DEVICE" --json --seconds "$SECONDS_PER_BENCH" | tee -a "$OUT/bench.jsonl"
  ended "${PIPESTATUS[0]}" "bench $*" 60
}

step_bench() {
  echo "== benchmarks"
  for k in 8 "$(size 5000 50)"; do
    for dir in "" "--backward"; do
      bench doc-softmax --batch "$(size 512 4)" --k "$k" $dir
      bench doc-softmax --batch "$(size 512 4)" --k "$k" $dir --composition
    done
  done
  # Exact MIPS top-k over REALM's index shape (13M × 128 f16) at Q ∈ {1, 64, 256, 1024} and
  # k ∈ {8, 2048, 8192}; each run's results for its first queries checked against float64.
  for q in 1 64 256 1024; do
    for k in 8 2048 8192; do
      emulate && [[ $q -gt 64 || $k -gt 2048 ]] && continue
      nq="$(size "$q" $((q > 1 ? 2 : 1)))"
      bench mips --docs "$(size 13000000 2000)" --dim 128 --queries "$nq" --k "$(size "$k" $((k > 8 ? 64 : 8)))" \
        --dtype f16 --check "$((nq < 4 ? nq : 4))"
    done
  done
  # Attention at BERT-base's heads (h = 12, dh = 64), unpadded and with half the keys padded.
  for l in 128 288 512; do
    emulate && [[ $l -ne 128 ]] && continue
    for pad in 0 0.5; do
      for dir in "" "--backward"; do
        bench attention --batch "$(size 8 1)" --heads "$(size 12 2)" --head-dim 64 --len "$(size "$l" 64)" \
          --pad-frac "$pad" --dtype bf16 $dir
      done
    done
  done
  # BERT-base forward and forward+backward, tokens/s, at b = 32, l = 128 and b = 8, l = 288.
  for bl in "32 128" "8 288"; do
    read -r b l <<<"$bl"
    emulate && [[ $l -ne 128 ]] && continue
    for dir in "" "--backward"; do
      bench bert --preset "$(size base tiny)" --batch "$(size "$b" 2)" --len "$(size "$l" 16)" --dtype bf16 $dir
    done
  done
  # A REALM pre-training step (launches and reads per step in its JSON).
  if allow 300 "bench train-step"; then
    timeout "$T" "$BIN" bench train-step --device "$DEVICE" --json --model "$(size base tiny)" --batch "$(size 8 1)" \
      --docs "$(size 8 2)" --len "$(size 288 32)" --query-len "$(size 64 8)" --masks "$(size 10 2)" \
      --index-size "$(size 100000 64)" --steps "$(size 5 1)" | tee -a "$OUT/bench.jsonl"
    ended "${PIPESTATUS[0]}" "bench train-step" 300
  fi
  # LayerNorm and GELU on BERT-base's activations (32 × 128 tokens; GELU on the 3072-wide FFN).
  ROWS="$(size 4096 8)"
  for dt in f32 bf16; do
    for dir in "" "--backward"; do
      bench nn --op layer-norm --rows "$ROWS" --hidden 768 --dtype "$dt" $dir
      bench nn --op layer-norm --rows "$ROWS" --hidden 768 --dtype "$dt" $dir --composition
      bench nn --op gelu-erf --rows "$ROWS" --hidden 3072 --dtype "$dt" $dir
      bench nn --op gelu-erf --rows "$ROWS" --hidden 3072 --dtype "$dt" $dir --composition
      bench nn --op gelu-tanh --rows "$ROWS" --hidden 3072 --dtype "$dt" $dir
    done
  done
  # Hidden-state dropout, BERT-base's b·l × 768: the device-drawn mask against the host mask + upload.
  for c in "" "--composition"; do bench dropout --rows "$(size 2304 8)" --hidden 768 --dtype bf16 $c; done
  # AdamW over BERT-base's parameters (199 tensors, 110M elements): one multi-tensor update
  # against the norm read + candle ops per parameter.
  for c in "" "--composition"; do bench adamw --tensors 199 --numel "$(size 110000000 20000)" $c; done
}

step_torch() {
  echo "== PyTorch baselines (same card)"
  if emulate; then
    skip "PyTorch baselines (--device emulate: they measure the GPU)"
  elif ! "$PY" -c 'import torch' 2>/dev/null; then
    skip "PyTorch baselines: $PY has no torch"
  else
    for section in mips attention bert mlm softmax; do
      allow 150 "torch baselines $section" || return 0
      timeout "$T" "$PY" "$(dirname "$0")/gpu/torch_baselines.py" "$section" | tee -a "$OUT/torch.jsonl"
      ended "${PIPESTATUS[0]}" "torch baselines $section" 150
    done
  fi
}

step_demo() {
  echo "== demo"
  # The whole pipeline end to end. Under --device emulate it runs on the CPU at a tiny scale (its
  # evaluations embed every document: minutes through the emulated kernels), which tests the line.
  emulate && echo "demo on the CPU (--device emulate: the emulated kernels would take minutes)"
  allow 300 demo || return 0
  timeout "$T" "$BIN" demo --device "$(size cuda cpu)" --scale "$(size 0.2 0.002)" --out "$OUT/demo" --quiet \
    > "$OUT/demo.txt" 2>&1
  local rc=$?
  ((rc == 0)) && echo "demo: finished ($(grep -c '' "$OUT/demo.txt") lines in $OUT/demo.txt)"
  ((rc == 0)) || tail -5 "$OUT/demo.txt"
  ended "$rc" demo 300
}

step_sanitizer() {
  echo "== compute-sanitizer"
  # memcheck and racecheck over the whole selftest. Last: they are the slowest steps, and one
  # stopped by its time limit is reported as incomplete, not as a finding.
  if emulate; then
    skip "compute-sanitizer (--device emulate: the emulator checks bounds and races itself)"
  elif ! command -v compute-sanitizer >/dev/null; then
    skip "compute-sanitizer is not installed on this machine"
  else
    for tool in memcheck racecheck; do
      allow 150 "compute-sanitizer $tool" || return 0
      timeout "$T" compute-sanitizer --tool "$tool" --error-exitcode 1 "$BIN" selftest --device cuda \
        > "$OUT/sanitizer-$tool.txt" 2>&1
      local rc=$?
      if ((rc == 0)); then
        echo "$tool: clean"
      elif ((rc == 124)); then
        echo "incomplete: $tool stopped after $T s (see $OUT/sanitizer-$tool.txt)"
        incomplete=1
      else
        echo "$tool: FAILED, exit $rc (see $OUT/sanitizer-$tool.txt)"
        status=1
      fi
    done
  fi
}

for step in $STEPS; do "step_$step"; done

echo "== summary"
echo "selftest: $(grep -c '' "$OUT/selftest.txt" 2>/dev/null || echo 0) lines, exit $selftest_rc"
"$PY" "$(dirname "$0")/gpu/summary.py" "$OUT" || status=1
verdict="$([[ $status -eq 0 ]] && echo passed || echo FAILED)"
((incomplete)) && verdict="$verdict (incomplete: some steps were cut or skipped by the ${DEADLINE} s budget)"
echo "gpu-check on $DEVICE in ${SECONDS} s: $verdict"
exit $status
