"""Makes tests/fixtures/hf-realm-tiny: a tiny random transformers RealmForOpenQA with its
RealmRetriever, saved as transformers saves the released REALM models (pytorch_model.bin with
block_emb, block_records.npy of pickled byte strings, tokenizer files), and what RealmForOpenQA
answers on a few questions. tests/hf_import.rs imports the folder with `realm import hf-realm`
and compares.

Usage: make_tiny_realm.py [OUT_DIR]   (default: tests/fixtures/hf-realm-tiny in this repo)
Needs transformers 4.40.2, torch and numpy (CPU), e.g.
  python3 -m venv /work/venv-hf && /work/venv-hf/bin/pip install transformers==4.40.2 torch==2.3.1 numpy==1.26.4

Files written:
  model/                 the transformers folder: config.json, pytorch_model.bin, block_records.npy,
                         tokenizer.json, vocab.txt, tokenizer_config.json, special_tokens_map.json
  questions.jsonl        NQ-open style {"question", "answers"}: the answer is what RealmForOpenQA
                         predicted, so a faithful import scores exact match 1.0 on every question
  expected.json          per question: the retrieved block ids in rank order, their scores (the
                         question embedding · block_emb, f32), the predicted block, span and
                         answer text, and the margins that make the comparison robust (see below)
  meta.json              versions, seed, config

The block embeddings are rounded to f16 values (realm's index stores f16; HF computes in f32 on the
same values). Questions are kept only where the retrieval order and the best answer span are
decided by a margin far above the f16 rounding of the query embedding realm searches with: the
gap between consecutive retrieved scores (and to the first block not retrieved), and between the
best and second-best reader logit (span score + retrieval score).
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import RealmConfig, RealmForOpenQA, RealmRetriever, RealmTokenizerFast

SEED = 0
BLOCKS = 16
BEAM = 3  # reader_beam_size: what RealmForOpenQA retrieves and reads in eval()
MIN_SCORE_GAP = 0.05
MIN_LOGIT_GAP = 0.05
WANT_QUESTIONS = 6

WORDS = """the a of in on is was and to by who what where when which city river king
queen war year born wrote built capital country name first largest north south east west
paris london rome berlin madrid vienna prague lisbon oslo dublin nile danube thames rhine
seine tiber volga shakespeare goethe dante tolstoy cervantes homer napoleon caesar victoria
cat dog play sing walk long old new""".split()
SUFFIXES = ["##s", "##ing", "##ed"]
# "?" must be in the vocabulary: RealmRetriever decodes the question with skip_special_tokens
# before pairing it with each block, so an [UNK] in a question vanishes from the reader's input
# (and from nothing else); realm keeps it. "!" stays out, so blocks hold [UNK]s.
PUNCTUATION = ["?", ".", ","]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "tests", "fixtures", "hf-realm-tiny")
    model_dir = os.path.join(out, "model")
    os.makedirs(model_dir, exist_ok=True)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    rng = np.random.default_rng(SEED)

    vocab = SPECIAL + WORDS + SUFFIXES + PUNCTUATION
    vocab_path = os.path.join(model_dir, "vocab.txt")
    with open(vocab_path, "w") as f:
        f.write("\n".join(vocab) + "\n")
    tokenizer = RealmTokenizerFast(vocab_file=vocab_path, do_lower_case=True)

    config = RealmConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=1,  # realm's fused attention takes head dimensions 32, 64, 128
        intermediate_size=64,
        hidden_act="gelu_new",
        max_position_embeddings=64,
        retriever_proj_size=16,
        num_block_records=BLOCKS,
        span_hidden_size=16,
        max_span_width=4,
        reader_beam_size=BEAM,
        searcher_beam_size=BEAM + 2,
        reader_seq_len=56,
        pad_token_id=0,
    )

    # Blocks: sentences of words, capitalised and punctuated as text is (the tokenizer lowercases
    # and splits them), some words with a suffix that becomes a separate wordpiece.
    def sentence(n):
        words = [str(w) for w in rng.choice(WORDS, size=n)]
        for i in range(n):
            if rng.random() < 0.15:
                words[i] += str(rng.choice(["s", "ing", "ed"]))
        words[0] = words[0].capitalize()
        return " ".join(words) + str(rng.choice([".", ",", "!"]))

    records = [(sentence(int(rng.integers(6, 14))) + " " + sentence(int(rng.integers(4, 12)))).encode() for _ in range(BLOCKS)]
    block_records = np.empty(BLOCKS, dtype=object)
    block_records[:] = records
    retriever = RealmRetriever(block_records, tokenizer)

    model = RealmForOpenQA(config, retriever=retriever).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
        # Random questions embed close to one common direction (a random BERT maps most inputs
        # alike); without it in the blocks, which blocks come first depends on the question.
        probe = tokenizer(
            [" ".join(str(w) for w in rng.choice(WORDS, size=5)) for _ in range(200)],
            return_tensors="pt",
            padding=True,
        )
        common = model.embedder(**probe, return_dict=True).projected_score.mean(0)
        common = common / common.norm()
        emb = torch.randn(BLOCKS, config.retriever_proj_size, generator=gen)
        emb = 2.0 * (emb - (emb @ common).unsqueeze(-1) * common)
        model.block_emb.copy_(emb.half().float())

    model.save_pretrained(model_dir, safe_serialization=False)
    retriever.save_pretrained(model_dir)

    # The questions: random word sequences, kept when every decision has a margin.
    kept, expected = [], []
    tries = 0
    while len(kept) < WANT_QUESTIONS and tries < 500:
        tries += 1
        question = " ".join(str(w) for w in rng.choice(WORDS, size=int(rng.integers(3, 8)))) + "?"
        ids = tokenizer([question], return_tensors="pt")
        with torch.no_grad():
            result = model(**ids, return_dict=True)
            q = model.embedder(**ids, return_dict=True).projected_score[0]
            scores = model.block_emb @ q
            order = torch.argsort(scores, descending=True)
            top = scores[order[: BEAM + 1]]
            score_gap = float((top[:-1] - top[1:]).min())
            # The reader's logits over the beam, as RealmForOpenQA computes them.
            retrieved = order[:BEAM]
            _, _, _, concat = retriever(retrieved.cpu(), ids["input_ids"], None, max_length=config.reader_seq_len)
            block_mask = concat.special_tokens_mask.bool().logical_not() & concat.token_type_ids.bool()
            hidden = model.reader.realm(
                concat.input_ids, attention_mask=concat.attention_mask, token_type_ids=concat.token_type_ids
            )[0]
            logits, starts, ends = model.reader.qa_outputs(hidden, block_mask)
            logits = logits + scores[retrieved].unsqueeze(-1)
            flat = torch.sort(logits.flatten(), descending=True).values
            logit_gap = float(flat[0] - flat[1])
        answer = tokenizer.decode(result.predicted_answer_ids)
        if score_gap < MIN_SCORE_GAP or logit_gap < MIN_LOGIT_GAP or not answer.strip():
            continue
        block = int(retrieved[int(result.reader_output.block_idx)])
        kept.append({"question": question, "answers": [answer]})
        expected.append(
            {
                "question": question,
                "retrieved": [int(i) for i in retrieved],
                "scores": [float(s) for s in scores[retrieved]],
                "predicted_block": block,
                "predicted_row": int(result.reader_output.block_idx),
                "start_pos": int(result.reader_output.start_pos),
                "end_pos": int(result.reader_output.end_pos),
                "answer": answer,
                "score_gap": score_gap,
                "logit_gap": logit_gap,
            }
        )
    if len(kept) < WANT_QUESTIONS:
        raise SystemExit(f"only {len(kept)} questions with margins in {tries} tries")

    with open(os.path.join(out, "questions.jsonl"), "w") as f:
        for q in kept:
            f.write(json.dumps(q) + "\n")
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    meta = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "seed": SEED,
        "blocks": BLOCKS,
        "reader_beam_size": BEAM,
        "questions_tried": tries,
        "min_score_gap": MIN_SCORE_GAP,
        "min_logit_gap": MIN_LOGIT_GAP,
    }
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps([(e["question"], e["answer"], e["retrieved"]) for e in expected], indent=1))
    print("->", os.path.abspath(out))


if __name__ == "__main__":
    main()
