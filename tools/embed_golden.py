"""Writes tests/data/all-minilm-embeddings.json: llama.cpp's own embeddings
(`llama-embedding`, the GGUF's pooling, unit length) of a fixed set of
sentences:

    LLAMA_CPP_BIN=.../build/bin python3 tools/embed_golden.py MODEL.gguf > tests/data/all-minilm-embeddings.json

MODEL.gguf is what `caravan pull all-minilm` installs.
"""

import json
import os
import subprocess
import sys

SENTENCES = [
    "The cat sat on the mat.",
    "A dog slept in the sun.",
    "Stock prices fell sharply after the announcement.",
    "How do I reset my password?",
    "The mitochondria is the powerhouse of the cell.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "Ünïcödé, émojis 🙂 and CJK 漢字 go through WordPiece too.",
    "unaffable unbelievably re-examination don't can't",
    "x",
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong and Buzz Aldrin walked on its surface while Michael Collins "
    "orbited above in the command module, and the crew returned safely to Earth eight days after launch, splashing "
    "down in the Pacific Ocean where the USS Hornet recovered them.",
]


def main():
    gguf = sys.argv[1]
    binary = os.path.join(os.environ["LLAMA_CPP_BIN"], "llama-embedding")
    env = dict(os.environ, LD_LIBRARY_PATH=os.environ["LLAMA_CPP_BIN"])
    rows = []
    for sentence in SENTENCES:
        # One sentence per run: the prompt is split on newlines, never inside one.
        out = subprocess.run(
            [binary, "-m", gguf, "-t", "2", "-p", sentence, "--embd-normalize", "2", "--embd-output-format", "json"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        data = json.loads(out.stdout[out.stdout.index("{") :])["data"]
        assert len(data) == 1, data
        rows.append({"text": sentence, "embedding": data[0]["embedding"]})
    json.dump({"model": "all-minilm", "gguf": os.path.basename(gguf), "rows": rows}, sys.stdout, ensure_ascii=False)
    print()


if __name__ == "__main__":
    main()
