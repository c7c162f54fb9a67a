"""Makes tests/fixtures/hf-realm: small random transformers REALM models (transformers 4.40.2,
torch 2.3.1, CPU, f32) and what they compute on one pre-training batch, for tests/realm_model.rs.

  scorer/   a RealmScorer with a separate query embedder (two RealmEmbedder towers), as
            save_pretrained writes it (config.json, model.safetensors; the embedders' unused
            cls.predictions.* included). config.json also says "retriever_proj_dropout": 0.0
            (ignored by transformers) so that our training pass computes what HF's does.
  encoder/  a RealmKnowledgeAugEncoder, as save_pretrained writes it.
  batch.json          the wordpieces the Rust test builds its inputs from: queries (masked),
                      titles and bodies (k per query, the null document first: empty title and
                      body), mask positions, targets and mask flags (m slots per query, padding
                      slots at position 0 with target 0 and flag 0), special ids, lengths.
  inputs.safetensors  what the HF models were given: query_input_ids/token_type_ids/
                      attention_mask [b, lq], candidate_* [b, k, ld], joined_* [b, k, lj] (i64)
  expected.safetensors
            query_score [b, p], candidate_score [b, k, p], relevance [b, k] (RealmScorer);
            cond_logprobs [b, k, m] (log_softmax of RealmKnowledgeAugEncoder's logits at each
            mask slot, padding slots included); marginal [b, m] (logsumexp_z of log_softmax
            (relevance) + cond); loss [1] (RealmKnowledgeAugEncoder's masked_lm_loss with
            relevance_score = the scorer's output, labels at the real masks, mlm_mask = labels
            != -100); grad.relevance [b, k] and grad.scorer.<name>, grad.encoder.<name> of that
            loss, back through the scorer, for a few parameters
  meta.json           versions and settings

Weights: transformers' initialisation with initializer_range 0.2, then every parameter (LayerNorm
and biases included) plus 0.05·N(0, 1), so that outputs are far from uniform and every tensor
matters. Dropout 0.

Usage: realm_fixtures.py [OUT_DIR]   (default: tests/fixtures/hf-realm in this repository)
Run with the venv that has the pinned versions: ~/.cache/realm/hf-venv/bin/python.
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import RealmConfig, RealmEmbedder, RealmKnowledgeAugEncoder, RealmScorer

SEED = 1234
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
VOCAB = 128
# Queries before masking, and which word indices are masked.
QUERIES = [[17, 40, 41, 9, 77, 23], [55, 12, 90, 31]]
MASKED = [[1, 2, 4], [0, 3]]
M = 3  # mask slots per query
K = 3  # candidates per query, the null document first
GRADS = {
    "scorer": [
        "embedder.cls.dense.weight",
        "embedder.cls.LayerNorm.weight",
        "embedder.realm.embeddings.word_embeddings.weight",
        "embedder.realm.encoder.layer.1.output.dense.weight",
        "query_embedder.cls.dense.weight",
        "query_embedder.realm.pooler.dense.weight",
    ],
    "encoder": [
        "cls.predictions.transform.dense.weight",
        "cls.predictions.transform.LayerNorm.bias",
        "cls.predictions.bias",
        "realm.embeddings.word_embeddings.weight",
        "realm.encoder.layer.0.attention.self.query.weight",
    ],
}


def perturb(model, gen):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


def pad_rows(rows, pad=PAD):
    """[n, l] ids, token types and attention mask of rows (ids, types), right-padded."""
    width = max(len(r[0]) for r in rows)
    ids = [r[0] + [pad] * (width - len(r[0])) for r in rows]
    types = [r[1] + [0] * (width - len(r[1])) for r in rows]
    mask = [[1] * len(r[0]) + [0] * (width - len(r[0])) for r in rows]
    return [torch.tensor(x, dtype=torch.long) for x in (ids, types, mask)]


def pair(a, b):
    """[CLS] a [SEP] b [SEP], segments 0 then 1 (BERT's pair layout)."""
    ids = [CLS] + a + [SEP] + b + [SEP]
    return ids, [0] * (len(a) + 2) + [1] * (len(b) + 1)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "tests", "fixtures", "hf-realm")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)

    config = RealmConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        retriever_proj_size=16,
        num_hidden_layers=2,
        num_attention_heads=1,
        intermediate_size=64,
        hidden_act="gelu_new",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=40,
        initializer_range=0.2,
        pad_token_id=PAD,
        num_candidates=K,
    )

    # The batch: masked queries, candidates (null first), mask slots.
    b = len(QUERIES)
    masked_queries, positions, targets, flags = [], [], [], []
    for words, idx in zip(QUERIES, MASKED):
        q = list(words)
        for i in idx:
            q[i] = MASK
        masked_queries.append(q)
        slots = [i + 1 for i in idx]  # +1 for [CLS]
        positions.append(slots + [0] * (M - len(slots)))
        targets.append([words[i] for i in idx] + [0] * (M - len(idx)))
        flags.append([1] * len(idx) + [0] * (M - len(idx)))
    titles, bodies = [], []
    for _ in range(b):
        row_t, row_b = [[]], [[]]
        for _ in range(K - 1):
            nt = int(torch.randint(1, 4, (1,), generator=gen))
            nb = int(torch.randint(4, 10, (1,), generator=gen))
            row_t.append(torch.randint(5, VOCAB, (nt,), generator=gen).tolist())
            row_b.append(torch.randint(5, VOCAB, (nb,), generator=gen).tolist())
        titles.append(row_t)
        bodies.append(row_b)

    q_ids, q_types, q_mask = pad_rows([([CLS] + q + [SEP], [0] * (len(q) + 2)) for q in masked_queries])
    d_ids, d_types, d_mask = pad_rows(
        [pair(titles[i][z], bodies[i][z]) for i in range(b) for z in range(K)]
    )
    j_ids, j_types, j_mask = pad_rows(
        [pair(masked_queries[i], bodies[i][z]) for i in range(b) for z in range(K)]
    )
    cand = lambda t: t.view(b, K, -1)
    inputs = {
        "query_input_ids": q_ids,
        "query_token_type_ids": q_types,
        "query_attention_mask": q_mask,
        "candidate_input_ids": cand(d_ids),
        "candidate_token_type_ids": cand(d_types),
        "candidate_attention_mask": cand(d_mask),
        "joined_input_ids": cand(j_ids),
        "joined_token_type_ids": cand(j_types),
        "joined_attention_mask": cand(j_mask),
    }

    # The models.
    scorer = RealmScorer(config, query_embedder=RealmEmbedder(config))
    encoder = RealmKnowledgeAugEncoder(config)
    for m in (scorer, encoder):
        perturb(m, gen)
        m.train()  # dropout is 0: training computes what evaluation does, with gradients
    for name, m in (("scorer", scorer), ("encoder", encoder)):
        m.save_pretrained(os.path.join(out, name))
    path = os.path.join(out, "scorer", "config.json")
    with open(path) as f:
        scorer_config = json.load(f)
    scorer_config["retriever_proj_dropout"] = 0.0
    with open(path, "w") as f:
        json.dump(scorer_config, f, indent=2, sort_keys=True)

    # Forward and backward.
    s = scorer(
        input_ids=q_ids,
        attention_mask=q_mask,
        token_type_ids=q_types,
        candidate_input_ids=inputs["candidate_input_ids"],
        candidate_attention_mask=inputs["candidate_attention_mask"],
        candidate_token_type_ids=inputs["candidate_token_type_ids"],
    )
    relevance = s.relevance_score
    relevance.retain_grad()
    lj = j_ids.shape[1]
    labels = torch.full((b, lj), -100, dtype=torch.long)
    for i in range(b):
        for slot in range(M):
            if flags[i][slot]:
                labels[i, positions[i][slot]] = targets[i][slot]
    e = encoder(
        input_ids=inputs["joined_input_ids"],
        attention_mask=inputs["joined_attention_mask"],
        token_type_ids=inputs["joined_token_type_ids"],
        relevance_score=relevance,
        labels=labels,
        mlm_mask=(labels != -100).long(),
    )
    e.loss.backward()

    log_probs = e.logits.detach().log_softmax(-1).view(b, K, lj, VOCAB)
    pos = torch.tensor(positions)
    tgt = torch.tensor(targets)
    cond = torch.stack(
        [
            torch.stack([log_probs[i, z, pos[i], tgt[i]] for z in range(K)])
            for i in range(b)
        ]
    )
    marginal = (relevance.detach().log_softmax(-1).unsqueeze(-1) + cond).logsumexp(1)

    expected = {
        "query_score": s.query_score.detach(),
        "candidate_score": s.candidate_score.detach(),
        "relevance": relevance.detach(),
        "cond_logprobs": cond,
        "marginal": marginal,
        "loss": e.loss.detach().reshape(1),
        "grad.relevance": relevance.grad,
    }
    for model_name, model in (("scorer", scorer), ("encoder", encoder)):
        params = dict(model.named_parameters())
        for name in GRADS[model_name]:
            expected[f"grad.{model_name}.{name}"] = params[name].grad
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))
    save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(out, "inputs.safetensors"))

    batch = {
        "special": {"pad": PAD, "unk": UNK, "cls": CLS, "sep": SEP, "mask": MASK},
        "vocab_size": VOCAB,
        "queries": masked_queries,
        "titles": titles,
        "bodies": bodies,
        "positions": positions,
        "targets": targets,
        "token_mask": flags,
        "k": K,
    }
    with open(os.path.join(out, "batch.json"), "w") as f:
        json.dump(batch, f, indent=1)
    meta = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "seed": SEED,
        "dtype": "float32",
        "script": "scripts/hf/realm_fixtures.py",
    }
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(f"wrote {out}: loss {e.loss.item():.6f}, relevance {relevance.detach().tolist()}")


if __name__ == "__main__":
    main()
