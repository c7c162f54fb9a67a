#!/usr/bin/env python3
"""Builds data/demo/ (docs.jsonl, train.jsonl, dev.jsonl) from ../shared/data.

    python3 scripts/make_demo_data.py [--shared ../shared] [--out data/demo]

Deterministic: the same inputs give byte-identical outputs (no randomness beyond a fixed hash).

- Documents: every wiki-vital document that holds the answer of a vital-facts question, plus
  filler documents (the rest, in the order of a fixed hash of their id) up to --docs in all.
- Each text is cut to its first whole sentences: sentences are added while the text stays within
  --max-words words (the first sentence is always kept), and no more once it has --min-words.
  Sentences are split with the rules of the crate's `data::sentences`.
- A question is kept when one of its answers is still in its (trimmed) document under the rules of
  the crate's `data::contains_answer` (SQuAD-normalised whole-word containment); the others are
  dropped and counted.
- Split by document, not by question: a question goes to dev when a fixed hash of its doc_id falls
  in the dev fraction, so no dev question is about a document that a train question is about
  (fine-tuning cannot memorise a subject's facts and be scored on the same subject).
"""

import argparse
import hashlib
import json
import re
import string
import sys
from pathlib import Path

ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "e.g", "i.e", "etc", "no"}


def sentences(text):
    """(start, end) character spans of sentences: a port of src/data/salient.rs `sentences`."""
    out = []
    start = 0
    n = len(text)
    for i, c in enumerate(text):
        if c not in ".!?":
            continue
        next_ws = i + 1 < n and text[i + 1].isspace()
        after = next((j for j in range(i + 1, n) if not text[j].isspace()), None)
        starts_sentence = after is not None and (
            text[after].isupper() or text[after] in "0123456789" or text[after] == '"'
        )
        if not (next_ws and starts_sentence):
            continue
        if c == ".":
            words = re.split(r"\s", text[start:i])
            word = words[-1] if words else ""
            single_initial = len(word) == 1 and word.isupper()
            if single_initial or word.lower() in ABBREVIATIONS:
                continue
        out.append((start, i + 1))
        start = after if after is not None else n
    if text[start:].strip() == "":
        if not out and text.strip():
            out.append((0, n))
    else:
        out.append((start, n))
    return out


def normalize_answer(s):
    """SQuAD's normalisation, as src/data/qa.rs `normalize_answer`."""
    s = "".join(ch for ch in s.lower() if ch not in string.punctuation)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def contains_answer(text, answers):
    """As src/data/answers.rs `contains_answer`: a whole-word normalised sequence."""
    words = normalize_answer(text).split(" ")
    for a in answers:
        needle = normalize_answer(a).split()
        if not needle:
            continue
        k = len(needle)
        if any(words[i : i + k] == needle for i in range(len(words) - k + 1)):
            return True
    return False


def trim(text, min_words, max_words):
    """The first whole sentences: added while within max_words (at least one), up to min_words."""
    kept = []
    count = 0
    for s, e in sentences(text):
        w = len(text[s:e].split())
        if kept and (count >= min_words or count + w > max_words):
            break
        kept.append(text[s:e])
        count += w
    return " ".join(kept)


def fixed_hash(tag, key):
    return int.from_bytes(hashlib.sha256(f"{tag}:{key}".encode()).digest()[:8], "big")


def main():
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=here.parent / "shared")
    ap.add_argument("--out", type=Path, default=here / "data" / "demo")
    ap.add_argument("--docs", type=int, default=2000, help="documents in all")
    ap.add_argument("--min-words", type=int, default=100)
    ap.add_argument("--max-words", type=int, default=120)
    ap.add_argument("--dev-percent", type=int, default=20)
    args = ap.parse_args()

    corpus = {}
    with open(args.shared / "data" / "wiki-vital" / "docs.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            corpus[d["id"]] = d
    questions = []
    with open(args.shared / "data" / "qa" / "vital-facts.jsonl", encoding="utf-8") as f:
        for i, line in enumerate(f):
            q = json.loads(line)
            q["id"] = f"vital-facts:{i + 1}"
            questions.append(q)

    trimmed = {}

    def text_of(doc_id):
        if doc_id not in trimmed:
            d = corpus[doc_id]
            trimmed[doc_id] = trim(d["text"], args.min_words, args.max_words)
        return trimmed[doc_id]

    kept, lost_in_source, lost_by_trim = [], [], []
    for q in questions:
        doc = corpus.get(q["doc_id"])
        if doc is None or not contains_answer(doc["text"], q["answers"]):
            lost_in_source.append(q)
        elif not contains_answer(text_of(q["doc_id"]), q["answers"]):
            lost_by_trim.append(q)
        else:
            kept.append(q)

    answer_docs = sorted({q["doc_id"] for q in kept})
    if len(answer_docs) > args.docs:
        sys.exit(f"{len(answer_docs)} documents hold answers, more than --docs {args.docs}")
    held = set(answer_docs)
    filler = sorted((i for i in corpus if i not in held), key=lambda i: fixed_hash("filler", i))
    filler = filler[: args.docs - len(answer_docs)]
    doc_ids = sorted(held | set(filler))

    args.out.mkdir(parents=True, exist_ok=True)
    words = 0
    with open(args.out / "docs.jsonl", "w", encoding="utf-8") as f:
        for i in doc_ids:
            text = text_of(i)
            words += len(text.split())
            rec = {"id": i, "title": corpus[i]["title"], "text": text}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def is_dev(q):
        return fixed_hash("split", q["doc_id"]) % 100 < args.dev_percent

    fields = ["id", "question", "answers", "subject", "relation", "doc_id"]
    splits = {"train": [q for q in kept if not is_dev(q)], "dev": [q for q in kept if is_dev(q)]}
    for name, qs in splits.items():
        with open(args.out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for q in qs:
                f.write(json.dumps({k: q[k] for k in fields}, ensure_ascii=False) + "\n")

    print(
        f"documents: {len(doc_ids)} ({len(answer_docs)} holding answers, {len(filler)} filler), "
        f"{words} words, mean {words / len(doc_ids):.1f}\n"
        f"questions: {len(questions)} read, {len(kept)} kept "
        f"(train {len(splits['train'])}, dev {len(splits['dev'])}); dropped: "
        f"{len(lost_in_source)} answer not in the source document, "
        f"{len(lost_by_trim)} answer cut by trimming"
    )


if __name__ == "__main__":
    main()
