"""PyTorch baselines for scripts/gpu-check.sh, measured on the same card as realm's benches:
one JSON object per line with op, shape (realm's shape string for the same work), dtype and
median_ms (CUDA events, after warm-up); tokens_per_s and gb_per_s where realm reports them too.

Usage: torch_baselines.py [--smoke] [SECTION ...]
Sections: softmax, mips, attention, bert, mlm (default: all). Needs torch, and transformers for
bert and mlm (random weights: nothing is downloaded). --smoke runs the sections at tiny sizes on
the CPU, to test the script itself where there is no GPU; its numbers mean nothing."""
import contextlib
import json
import sys
import time

import torch

SMOKE = "--smoke" in sys.argv
DEVICE = "cpu" if SMOKE else "cuda"


def size(full, smoke):
    """`full` on the GPU, `smoke` in a --smoke run."""
    return smoke if SMOKE else full


def median_ms(fn, warmup=5, iters=50):
    if SMOKE:
        warmup, iters = 1, 1
    for _ in range(warmup):
        fn()
    times = []
    if SMOKE:
        for _ in range(iters):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    else:
        torch.cuda.synchronize()
        for _ in range(iters):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def report(op, shape, dtype, ms, **extra):
    device = "cpu (smoke)" if SMOKE else torch.cuda.get_device_name()
    row = {"op": op, "shape": shape, "dtype": dtype, "device": device, "median_ms": ms, **extra}
    print(json.dumps(row), flush=True)


def softmax():
    for k in (8, 5000):
        x = torch.randn(512, k, device=DEVICE, requires_grad=True)
        report("torch softmax fwd", f"b=512 k={k}", "f32", median_ms(lambda: torch.softmax(x, -1)))
        report("torch softmax fwd+bwd", f"b=512 k={k}", "f32",
               median_ms(lambda: torch.softmax(x, -1).sum().backward()))


def mips():
    # realm's `bench mips` shapes: matmul + topk over a 13M x 128 f16 index, and a plain copy of
    # the index (the bandwidth the scan is measured against).
    n, d = size(13_000_000, 20_000), 128
    dtype = torch.float32 if SMOKE else torch.float16  # the CPU has no f16 matmul in older torch
    x = torch.randn(n, d, device=DEVICE, dtype=dtype) / d ** 0.5
    y = torch.empty_like(x)
    ms = median_ms(lambda: y.copy_(x), iters=10)
    report("torch copy (index, read+write)", f"n={n} d={d}", "f16", ms,
           gb_per_s=2 * x.numel() * x.element_size() / (ms * 1e-3) / 1e9)
    del y
    for q, k in ((1, 8), (64, 8), (256, 8), (1024, 8), (64, 2048), (64, 8192)):
        qs = torch.randn(q, d, device=DEVICE, dtype=dtype) / d ** 0.5
        report("torch matmul+topk", f"n={n} d={d} q={q} k={k}", "f16",
               median_ms(lambda: torch.topk(qs @ x.T, k, dim=1), warmup=2, iters=10))
        if not SMOKE:
            torch.cuda.empty_cache()


def attention():
    # realm's `bench attention --batch 8 --heads 12 --head-dim 64 --dtype bf16` shapes.
    # Unpadded: SDPA's flash backend. Half the keys padded: SDPA with a boolean key mask (flash
    # takes no mask; torch picks the backend), every query row computed, as a padded batch is.
    from torch.nn.attention import SDPBackend, sdpa_kernel
    sdpa = torch.nn.functional.scaled_dot_product_attention
    b, h, dh = size(8, 1), size(12, 2), 64
    for l in size((128, 288, 512), (128,)):
        q, k, v = (torch.randn(b, h, l, dh, device=DEVICE, dtype=torch.bfloat16,
                               requires_grad=True) for _ in range(3))
        for pad in (0.0, 0.5):
            length = l - round(pad * l)
            shape = f"b={b} h={h} l={l} dh={dh} len={length}"
            if length == l:
                name, mask = "torch sdpa flash", None
                backend = contextlib.nullcontext() if SMOKE else sdpa_kernel(
                    [SDPBackend.FLASH_ATTENTION])
            else:
                name = "torch sdpa with key mask"
                mask = (torch.arange(l, device=DEVICE) < length).view(1, 1, 1, l)
                backend = contextlib.nullcontext()
            with backend:
                report(f"{name} fwd", shape, "bf16",
                       median_ms(lambda: sdpa(q, k, v, attn_mask=mask).detach()))
                report(f"{name} fwd+bwd", shape, "bf16",
                       median_ms(lambda: sdpa(q, k, v, attn_mask=mask).float().sum().backward()))


def bert_config():
    from transformers import BertConfig
    if SMOKE:
        return BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=128)
    return BertConfig()  # BERT-base


def bert_model(cls, config):
    """A randomly initialised transformers model in bf16 on DEVICE, SDPA attention where this
    transformers has it for BERT; returns (model, attention implementation)."""
    try:
        model = cls._from_config(config, attn_implementation="sdpa")
    except (TypeError, ValueError, ImportError):
        model = cls(config)
    attention = getattr(model.config, "_attn_implementation", None) or "eager"
    return model.to(DEVICE, torch.bfloat16), attention


def bert():
    # realm's `bench bert --preset base --batch B --len L --dtype bf16 [--backward]`.
    from transformers import BertModel
    config = bert_config()
    model, attention = bert_model(BertModel, config)
    for b, l in size(((32, 128), (8, 288)), ((2, 16),)):
        ids = torch.randint(1000, config.vocab_size, (b, l), device=DEVICE)
        mask = torch.ones(b, l, dtype=torch.long, device=DEVICE)
        shape = (f"b={b} l={l} layers={config.num_hidden_layers} hidden={config.hidden_size} "
                 f"heads={config.num_attention_heads}")

        def fwd():
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask)

        def fwd_bwd():
            model(input_ids=ids, attention_mask=mask).last_hidden_state.float().sum().backward()

        for name, fn, train in (("fwd", fwd, False), ("fwd+bwd", fwd_bwd, True)):
            model.train(train)
            ms = median_ms(fn, iters=20)
            report(f"torch BertModel {name}", shape, "bf16", ms, attention=attention,
                   tokens_per_s=b * l / (ms * 1e-3))


def mlm():
    # The tokens of realm's `bench train-step --model base --batch 8 --docs 8 --len 288
    # --masks 10`: b·k = 64 rows of 288, 10 masked positions per row, forward+backward of
    # BertForMaskedLM (its head scores every position; realm's only the masked ones).
    from transformers import BertForMaskedLM
    rows, l, masks = size(64, 2), size(288, 32), size(10, 2)
    config = bert_config()
    model, attention = bert_model(BertForMaskedLM, config)
    model.train()
    ids = torch.randint(1000, config.vocab_size, (rows, l), device=DEVICE)
    labels = torch.full_like(ids, -100)
    labels[:, 1:1 + masks] = ids[:, 1:1 + masks]
    ms = median_ms(lambda: model(input_ids=ids, labels=labels).loss.backward(), iters=10)
    report("torch BertForMaskedLM fwd+bwd", f"rows={rows} l={l} masks={masks}", "bf16", ms,
           attention=attention, tokens_per_s=rows * l / (ms * 1e-3))


SECTIONS = {"softmax": softmax, "mips": mips, "attention": attention, "bert": bert, "mlm": mlm}

if __name__ == "__main__":
    names = [a for a in sys.argv[1:] if a != "--smoke"] or list(SECTIONS)
    for name in names:
        if name not in SECTIONS:
            sys.exit(f"torch_baselines.py: unknown section {name!r}; choose from {list(SECTIONS)}")
    for name in names:
        SECTIONS[name]()
