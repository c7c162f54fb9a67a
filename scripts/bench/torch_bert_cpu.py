"""transformers' BertModel on the CPU, the baseline of `realm bench bert`: prints one JSON object
{"fwd_ms", "fwd_bwd_ms", "fwd_min_ms", "fwd_bwd_min_ms"} (medians and minima after warm-up) for
random full-length sequences, f32. The forward is eval mode without gradients; forward+backward
is training mode (dropout on) with the loss the sum of the last hidden state, gradients of every
parameter, as `realm bench bert --backward` does. SDPA attention where the installed
transformers has it for BERT, else eager.
Usage: torch_bert_cpu.py MODEL_DIR B L [SECONDS] [THREADS]"""
import json
import sys

import torch
from transformers import BertModel

from torch_attention_cpu import times_ms  # the same timing loop (this folder)


def main():
    path, b, l = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 3.0
    torch.set_num_threads(int(sys.argv[5]) if len(sys.argv) > 5 else 2)
    torch.manual_seed(0)
    try:
        model, attention = BertModel.from_pretrained(path, attn_implementation="sdpa"), "sdpa"
    except ValueError:  # transformers before BERT's SDPA support
        model, attention = BertModel.from_pretrained(path, attn_implementation="eager"), "eager"
    ids = torch.randint(1000, model.config.vocab_size, (b, l))
    mask = torch.ones(b, l, dtype=torch.long)

    def fwd():
        model.eval()
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)

    def fwd_bwd():
        model.train()
        model(input_ids=ids, attention_mask=mask).last_hidden_state.sum().backward()

    f, fb = times_ms(fwd, seconds), times_ms(fwd_bwd, seconds)
    print(json.dumps({
        "attention": attention, "torch": torch.__version__,
        "fwd_ms": f[len(f) // 2], "fwd_min_ms": f[0],
        "fwd_bwd_ms": fb[len(fb) // 2], "fwd_bwd_min_ms": fb[0],
    }))


if __name__ == "__main__":
    main()
