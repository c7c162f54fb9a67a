"""PyTorch baselines for scripts/gpu-check.sh, measured on the same card as realm's benches:
one JSON object per line with op, shape, dtype, median_ms (CUDA events, after warm-up)."""
import json

import torch


def median_ms(fn, warmup=5, iters=50):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def report(op, shape, dtype, ms):
    print(json.dumps({"op": op, "shape": shape, "dtype": dtype, "device": torch.cuda.get_device_name(), "median_ms": ms}), flush=True)


def doc_softmax():
    for k in (8, 5000):
        x = torch.randn(512, k, device="cuda", requires_grad=True)
        report("torch softmax fwd", f"b=512 k={k}", "f32", median_ms(lambda: torch.softmax(x, -1)))
        report("torch softmax fwd+bwd", f"b=512 k={k}", "f32",
               median_ms(lambda: torch.softmax(x, -1).sum().backward()))


def mips():
    # realm's `bench mips` shapes: matmul + topk over a 13M x 128 f16 index, and a plain copy of
    # the index (the bandwidth the scan is measured against).
    n, d = 13_000_000, 128
    x = torch.randn(n, d, device="cuda", dtype=torch.float16) / d ** 0.5
    y = torch.empty_like(x)
    report("torch copy (index, read+write)", f"n={n} d={d}", "f16", median_ms(lambda: y.copy_(x), iters=10))
    del y
    for q, k in ((1, 8), (64, 8), (256, 8), (1024, 8), (256, 5000)):
        qs = torch.randn(q, d, device="cuda", dtype=torch.float16) / d ** 0.5
        report("torch matmul+topk", f"n={n} d={d} q={q} k={k}", "f16",
               median_ms(lambda: torch.topk(qs @ x.T, k, dim=1), warmup=2, iters=10))


if __name__ == "__main__":
    doc_softmax()
    mips()
