#!/usr/bin/env python3
"""Embeddings per second from an OpenAI-compatible ``POST /v1/embeddings``.

Standard library only. ``--inputs N`` sentences of about ``--words`` words,
drawn from a fixed word list with ``random.Random(f"{seed}:{i}")`` (the
same inputs on every server), embedded either in one request holding all
of them (``--clients 0``) or one input per request from ``--clients C``
closed-loop clients, each on its own kept-alive connection (as the
``openai`` and ``ollama`` clients pool theirs). Prints one JSON line:
clients, inputs, embeddings_per_s, seconds, dims.
"""

import argparse
import http.client
import json
import random
import threading
import time
import urllib.parse

WORDS = (
    "the of and to in is was for on that with as by at from his her an be this which or had are not but were have one "
    "their all they been has more when who will would there its about into than other some could time these two may "
    "first then only new such like over also after many most made did through where well before must between much "
    "river market garden engine window letter winter summer music family history people science student teacher city "
    "village ocean forest mountain station kitchen morning evening number system program question answer problem"
).split()


def sentences(n, words, seed):
    out = []
    for i in range(n):
        rng = random.Random(f"{seed}:{i}")
        out.append(" ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + ".")
    return out


def connect(base_url):
    url = urllib.parse.urlsplit(base_url)
    return http.client.HTTPConnection(url.hostname, url.port or 80, timeout=600)


def embed(conn, model, inputs):
    body = {"input": inputs, "encoding_format": "float"}
    if model:
        body["model"] = model
    conn.request("POST", "/v1/embeddings", json.dumps(body).encode(), {"Content-Type": "application/json"})
    r = conn.getresponse()
    answer = r.read()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {answer[:200]!r}")
    data = json.loads(answer)["data"]
    if len(data) != len(inputs):
        raise RuntimeError(f"{len(data)} embeddings for {len(inputs)} inputs")
    return len(data[0]["embedding"])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", default="")
    p.add_argument("--inputs", type=int, default=256)
    p.add_argument("--words", type=int, default=20)
    p.add_argument("--clients", type=int, default=0, help="0: all inputs in one request")
    p.add_argument("--seed", default="0")
    a = p.parse_args()
    inputs = sentences(a.inputs, a.words, a.seed)
    embed(connect(a.base_url), a.model, inputs[:1])  # warm-up
    dims = [0]
    start = time.perf_counter()
    if a.clients == 0:
        dims[0] = embed(connect(a.base_url), a.model, inputs)
    else:
        lock, next_input, errors = threading.Lock(), [0], []

        def client():
            conn = connect(a.base_url)
            while True:
                with lock:
                    i = next_input[0]
                    next_input[0] += 1
                if i >= len(inputs):
                    return
                try:
                    dims[0] = embed(conn, a.model, [inputs[i]])
                except Exception as e:  # noqa: BLE001 - reported, then fatal
                    errors.append(e)
                    return

        threads = [threading.Thread(target=client) for _ in range(a.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
    seconds = time.perf_counter() - start
    print(json.dumps({"clients": a.clients, "inputs": a.inputs, "embeddings_per_s": a.inputs / seconds, "seconds": seconds, "dims": dims[0]}))


if __name__ == "__main__":
    main()
