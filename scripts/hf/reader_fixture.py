"""Makes tests/fixtures/hf-reader: a tiny random transformers RealmReader (transformers 4.40.2,
torch 2.3.1, CPU, f32), a batch of `[CLS] question [SEP] body [SEP]` rows, and what RealmReader
computes on it: the reader logits of every span candidate, the predicted span, the loss and its
two terms for three labellings, and gradients of the first loss.
tests/reader.rs compares `realm::model::reader` with these files.

Usage: reader_fixture.py [OUT_DIR]   (default: tests/fixtures/hf-reader next to this script's repo)
Run with the venv that has the pinned versions, e.g. ~/.cache/realm/hf-venv/bin/python.

Files written:
  config.json          the RealmConfig (reader fields included)
  model.safetensors    every RealmReader tensor under its state_dict name (cls.predictions.bias and
                       cls.predictions.decoder.bias are one tensor in PyTorch, stored twice here)
  inputs.safetensors   input_ids, token_type_ids, attention_mask [rows, l] i64; block_mask [rows, l]
                       u8; relevance [k] f32; for case c in 0..3: start_positions_c,
                       end_positions_c [rows, answers] i64 (inclusive, -1 = none), has_answers_c
                       [k] u8
  expected.safetensors reader_logits [rows, C] f32 (masked spans hold about -3.4e38 here),
                       candidate_starts, candidate_ends [C] i64, block_idx, start_pos, end_pos [1]
                       i64, loss_c, reader_loss_c, retriever_loss_c [1] f32, grad.relevance [k] and
                       grad.<parameter name> for a few parameters (case 0's loss)
  meta.json            versions and the settings above
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import RealmConfig, RealmReader

SEED = 0
ROWS = 4  # reader beam
K = 6  # searcher beam: rows of the retriever term
QUESTION = [11, 12, 13]
ANSWER = [21, 22]
CLS, SEP, PAD = 2, 3, 0
GRAD_PARAMS = [
    "qa_outputs.dense_intermediate.weight",
    "qa_outputs.dense_intermediate.bias",
    "qa_outputs.layer_normalization.weight",
    "qa_outputs.dense_output.weight",
    "realm.encoder.layer.1.output.dense.weight",
    "realm.embeddings.word_embeddings.weight",
]


def body(n, plant, generator):
    """n random word ids (30..63), with ANSWER written at each offset in `plant`."""
    ids = torch.randint(30, 64, (n,), generator=generator).tolist()
    for at in plant:
        ids[at : at + len(ANSWER)] = ANSWER
    return ids


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "tests", "fixtures", "hf-reader")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)

    config = RealmConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=1,
        intermediate_size=64,
        hidden_act="gelu_new",
        # No dropout, so a training pass (gradients) computes what an evaluation pass does.
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=40,
        pad_token_id=PAD,
        span_hidden_size=16,
        max_span_width=5,
        reader_beam_size=ROWS,
        searcher_beam_size=K,
        reader_seq_len=18,
    )
    model = RealmReader(config).eval()
    # Away from HF's initialisation (zero biases, unit LayerNorm scales), so every parameter
    # matters to the comparison.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))

    # Bodies of 10, 12, 1 and 6 wordpieces. Row 0 holds the answer twice, row 1 once (at the last
    # possible place), row 2 not at all; row 3's gold span is 6 wide, wider than max_span_width.
    bodies = [body(10, [2, 6], gen), body(12, [10], gen), body(1, [], gen), body(6, [], gen)]
    gold = [[(2, 3), (6, 7)], [(10, 11)], [], [(0, 5)]]
    rows, segs, block = [], [], []
    offset = len(QUESTION) + 2
    for b in bodies:
        ids = [CLS] + QUESTION + [SEP] + b + [SEP]
        rows.append(ids)
        segs.append([0] * offset + [1] * (len(b) + 1))
        block.append([0] * offset + [1] * len(b) + [0])
    length = max(len(r) for r in rows)
    pad = lambda r, v: r + [v] * (length - len(r))
    input_ids = torch.tensor([pad(r, PAD) for r in rows])
    token_type_ids = torch.tensor([pad(s, 0) for s in segs])
    attention_mask = torch.tensor([pad([1] * len(r), 0) for r in rows])
    block_mask = torch.tensor([pad(m, 0) for m in block], dtype=torch.bool)
    relevance = (2.0 * torch.randn(K, generator=gen)).requires_grad_(True)

    def positions(spans_per_row):
        width = max(1, max(len(s) for s in spans_per_row))
        starts = [[offset + s for s, _ in spans] + [-1] * (width - len(spans)) for spans in spans_per_row]
        ends = [[offset + e for _, e in spans] + [-1] * (width - len(spans)) for spans in spans_per_row]
        return torch.tensor(starts), torch.tensor(ends)

    # Case 0: answers in the reader rows and in the retriever beam. Case 1: the same spans but no
    # retrieved block "has" the answer (retriever term zeroed). Case 2: no gold span (reader term
    # zeroed), the retriever term alone.
    cases = [
        (gold, [1, 1, 0, 1, 0, 1]),
        (gold, [0] * K),
        ([[], [], [], []], [0, 1, 0, 0, 1, 0]),
    ]
    inputs = {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
        "block_mask": block_mask.to(torch.uint8),
        "relevance": relevance.detach().clone(),
    }
    expected = {}
    for c, (spans, has) in enumerate(cases):
        starts, ends = positions(spans)
        has_answers = torch.tensor(has, dtype=torch.bool)
        model.zero_grad()
        relevance.grad = None
        output = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            relevance_score=relevance,
            block_mask=block_mask,
            start_positions=starts,
            end_positions=ends,
            has_answers=has_answers,
            return_dict=True,
        )
        inputs[f"start_positions_{c}"] = starts
        inputs[f"end_positions_{c}"] = ends
        inputs[f"has_answers_{c}"] = has_answers.to(torch.uint8)
        expected[f"loss_{c}"] = output.loss.detach().reshape(1)
        expected[f"reader_loss_{c}"] = output.reader_loss.detach().reshape(1)
        expected[f"retriever_loss_{c}"] = output.retriever_loss.detach().reshape(1)
        if c == 0:
            output.loss.backward()
            expected["grad.relevance"] = relevance.grad.detach().clone()
            named = dict(model.named_parameters())
            for name in GRAD_PARAMS:
                expected[f"grad.{name}"] = named[name].grad.detach().clone()
            expected["block_idx"] = output.block_idx.reshape(1)
            expected["start_pos"] = output.start_pos.reshape(1).long()
            expected["end_pos"] = output.end_pos.reshape(1).long()

    # The reader logits and candidates, from the projection itself (RealmReader's output does not
    # return them): the span scores plus the rows' relevance, as the forward pass adds them.
    with torch.no_grad():
        hidden = model.realm(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
        logits, starts, ends = model.qa_outputs(hidden, block_mask)
        expected["reader_logits"] = (logits + relevance[:ROWS].unsqueeze(-1)).contiguous()
        expected["candidate_starts"] = starts.long()
        expected["candidate_ends"] = ends.long()

    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(out, "inputs.safetensors"))
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))
    meta = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "seed": SEED,
        "rows": ROWS,
        "searcher_beam": K,
        "question": QUESTION,
        "answer": ANSWER,
        "gold_body_spans_inclusive": gold,
        "losses": {c: float(expected[f"loss_{c}"]) for c in range(len(cases))},
        "grad_params": GRAD_PARAMS,
    }
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    for name in os.listdir(out):
        os.chmod(os.path.join(out, name), 0o644)  # safetensors writes 0600
    print(json.dumps(meta["losses"]), "->", os.path.abspath(out))


if __name__ == "__main__":
    main()
