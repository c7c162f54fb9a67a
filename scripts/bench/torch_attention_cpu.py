"""PyTorch's CPU scaled_dot_product_attention on one shape, the baseline of `realm bench attention`:
prints one JSON object {"fwd_ms", "fwd_bwd_ms"} (medians after warm-up) and their minima
{"fwd_min_ms", "fwd_bwd_min_ms"}, f32, h=12, dh=64.
Usage: torch_attention_cpu.py B L [PAD_FRAC] [SECONDS]"""
import json
import sys
import time

import torch


def times_ms(fn, seconds):
    for _ in range(3):
        fn()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)


def main():
    b, l = int(sys.argv[1]), int(sys.argv[2])
    pad = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 3.0
    torch.manual_seed(0)
    q, k, v = (torch.randn(b, 12, l, 64, requires_grad=True) for _ in range(3))
    mask = None
    if pad > 0:
        keep = l - round(pad * l)
        mask = torch.zeros(b, 1, 1, l, dtype=torch.bool)
        mask[..., :keep] = True
    attn = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    with torch.no_grad():
        fwd = times_ms(attn, seconds)
    fwd_bwd = times_ms(lambda: attn().sum().backward(), seconds)
    print(json.dumps({"b": b, "l": l, "pad_frac": pad, "threads": torch.get_num_threads(),
                      "fwd_ms": fwd[len(fwd) // 2], "fwd_bwd_ms": fwd_bwd[len(fwd_bwd) // 2],
                      "fwd_min_ms": fwd[0], "fwd_bwd_min_ms": fwd_bwd[0]}))


if __name__ == "__main__":
    main()
