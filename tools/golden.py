"""Writes a reference file like tests/data/smollm2-greedy.jsonl from a
running llama.cpp server: for every row of a file (its prompt tokens),
llama.cpp's greedy continuation of up to 32 tokens and the five
most likely tokens with their log-probabilities at the first four
positions. A row with a prompt and no prompt tokens has its prompt
tokenized by llama.cpp. The tiny models' references (tests/data/tiny) come
from it:

    llama-server -m tests/data/tiny/llama3.gguf -t 2 -c 4096 -np 1 --port 18080
    python3 tools/golden.py http://127.0.0.1:18080 ROWS.jsonl > tests/data/tiny/llama3-greedy.jsonl
"""

import json
import sys
import urllib.request


def complete(url, tokens):
    body = {"prompt": tokens, "n_predict": 32, "temperature": 0, "n_probs": 5, "cache_prompt": False, "return_tokens": True}
    req = urllib.request.Request(url + "/completion", json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=600).read())


def tokenize(url, text):
    body = {"content": text, "add_special": True, "parse_special": True}
    req = urllib.request.Request(url + "/tokenize", json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=600).read())["tokens"]


def main():
    url, rows = sys.argv[1], sys.argv[2]
    for line in open(rows):
        row = json.loads(line)
        # A row may give its prompt as text alone: llama.cpp tokenizes it.
        if "prompt_tokens" not in row:
            row["prompt_tokens"] = tokenize(url, row["prompt"])
        r = complete(url, row["prompt_tokens"])
        row["completion_tokens"] = r["tokens"]
        row["completion"] = r["content"]
        row["stop_type"] = r["stop_type"]
        row["top_logprobs"] = [
            [{"id": c["id"], "token": c["token"], "logprob": round(c["logprob"], 4)} for c in position["top_logprobs"]]
            for position in r["completion_probabilities"][:4]
        ]
        print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main()
