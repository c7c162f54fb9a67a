#!/usr/bin/env bash
# Step time of REALM pre-training on one process against two MPI ranks with the same global
# batch (docs/scale.md, "Measured: two CPU ranks against one"). Three runs of STEPS steps from
# the same checkpoint on the same corpus, in this order:
#   1 process, 1 thread;  1 process, 2 threads;  mpirun -np 2, 1 thread per rank.
# The step time is the median of the differences of `time_s` in metrics.jsonl from step 6 on
# (the index build and the first, slower steps are left out). Needs a `--features mpi` release build.
#
#   scripts/dist-scaling.sh REALM INIT CORPUS OUT [STEPS]
# e.g. scripts/dist-scaling.sh target/release/realm demo/ict/checkpoint demo/data/docs.jsonl /tmp/scaling 40
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n 2,10p "$0" >&2
  exit 2
fi
realm=$1 init=$2 corpus=$3 out=$4 steps=${5:-40}
[ -x "$realm" ] || { echo "dist-scaling: $realm is not an executable" >&2; exit 2; }
[ -e "$out" ] && { echo "dist-scaling: $out exists; give a new folder" >&2; exit 2; }
mkdir -p "$out"
# The demo's pre-training settings (src/demo.rs), no refresh: the step alone.
args=(pretrain --device cpu --quiet --init "$init" --corpus "$corpus" --steps "$steps"
      --batch 16 --top-k 8 --block-len 224 --query-len 48 --doc-len 128 --lr 1e-3 --warmup 1
      --log-every 1 --refresh-every 0 --checkpoint-every 0 --checkpoint-minutes 0)

step_time() {
  python3 - "$1/metrics.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
t = [r["time_s"] for r in rows if r.get("stage") == "pretrain" and "time_s" in r]
d = [b - a for a, b in zip(t, t[1:])][5:]
tok = [r["tokens_per_s"] for r in rows[6:] if "tokens_per_s" in r]
print(f"{statistics.median(d):.3f} {statistics.median(tok):.0f}")
PY
}

RAYON_NUM_THREADS=1 "$realm" "${args[@]}" --run "$out/one-1t" >/dev/null
RAYON_NUM_THREADS=2 "$realm" "${args[@]}" --run "$out/one-2t" >/dev/null
mpirun --allow-run-as-root --oversubscribe -np 2 -x RAYON_NUM_THREADS=1 "$realm" "${args[@]}" --run "$out/two-ranks" >/dev/null

read -r t1 k1 < <(step_time "$out/one-1t")
read -r t2 k2 < <(step_time "$out/one-2t")
read -r tr kr < <(step_time "$out/two-ranks")
printf '%-28s %10s %14s\n' "configuration" "s/step" "tokens/s"
printf '%-28s %10s %14s\n' "1 process, 1 thread" "$t1" "$k1"
printf '%-28s %10s %14s\n' "1 process, 2 threads" "$t2" "$k2"
printf '%-28s %10s %14s\n' "2 ranks, 1 thread each" "$tr" "$kr"
python3 -c "import sys; t1,t2,tr=map(float,sys.argv[1:]); print(f'2 ranks vs 1 process 1 thread: speed-up {t1/tr:.2f}x, efficiency {t1/tr/2:.0%}; vs 1 process 2 threads: {t2/tr:.2f}x')" "$t1" "$t2" "$tr"
