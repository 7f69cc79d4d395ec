#!/usr/bin/env python3
"""Soak and overload test for `caravan serve`, on loopback only.

Starts the server (a small KV pool, so that long prompts preempt), runs a
warm-up of the same mix, then N mixed requests from C concurrent clients:
Ollama and OpenAI routes, streaming and not, /api/batch, n > 1, shared
system prompts, prompt lengths up to the context limit (and past it, which
must be a 400), embeddings, and three in five streaming clients (about 30%
of all) leaving mid-stream. Then an overload phase against a second server
with a tiny queue. It checks that:

* every request that was not cancelled completed, or got a documented
  error (400 for a prompt past the context, 503/429 when the queue is full);
* afterwards /metrics shows no KV block in use, nothing running or
  waiting;
* the resident memory after the run is within a margin of the memory after
  the warm-up;
* overload answers 503/429 with Retry-After quickly, every accepted request
  completes, and the server serves normally once the load stops.

Prints a report and exits non-zero if a check fails.

    python3 bench/soak.py                 # 500 requests (the long version)
    python3 bench/soak.py --requests 60 --short   # what CI runs
"""

import argparse
import concurrent.futures as cf
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time

MODEL = "smollm2:135m"
WORDS = ("time person year way day thing man world life hand part child eye woman place work week case point "
         "government company number group problem fact river stone light music garden window paper story").split()
SYSTEMS = [" ".join(random.Random(k).choice(WORDS) for _ in range(n)) for k, n in [(1, 150), (2, 300), (3, 60)]]


class Server:
    def __init__(self, binary, args):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([binary, "serve", "--host", f"127.0.0.1:{self.port}", *args], stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 60
        while True:
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                self.log.seek(0)
                sys.exit(f"the server did not start: {self.log.read().decode()[-2000:]}")
            time.sleep(0.1)

    def conn(self, timeout=600):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path):
        c = self.conn(10)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read().decode()
        c.close()
        return r.status, body

    def metrics(self):
        out = {}
        for line in self.get("/metrics")[1].splitlines():
            m = re.match(r"^([a-z_]+) ([0-9.e+-]+)$", line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out

    def rss(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(next(l for l in f if l.startswith("VmRSS:")).split()[1]) * 1024

    def wait_idle(self, seconds=120):
        deadline = time.time() + seconds
        while time.time() < deadline:
            m = self.metrics()
            if m["caravan_kv_blocks_used"] == 0 and m["caravan_running_sequences"] == 0 and m["caravan_waiting_sequences"] == 0 and m["caravan_queued_requests"] == 0:
                return m
            time.sleep(0.2)
        return self.metrics()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def words(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def prompt_words(rng, short):
    """Mostly short prompts, some long, a few up to (and past) the context."""
    x = rng.random()
    if x < 0.70:
        return rng.randint(3, 60)
    if x < 0.90:
        return rng.randint(100, 600)
    if short or x < 0.98:
        return rng.randint(600, 1200)
    return rng.randint(3000, 12000)  # about a token a word: some do not fit 8,192


def make_request(rng, short):
    """(method path, body, streaming?, leave after N lines or None, prompt words)."""
    n_words = prompt_words(rng, short)
    text = words(rng, n_words)
    predict = rng.randint(1, 48)
    stream = rng.random() < 0.5
    # Three in five streaming clients (about 30% of all) leave early.
    leave = rng.randint(1, 4) if stream and rng.random() < 0.6 else None
    messages = [{"role": "user", "content": text}]
    if rng.random() < 0.4:
        messages.insert(0, {"role": "system", "content": rng.choice(SYSTEMS)})
    kind = rng.choice(["generate", "chat", "completions", "chat_completions", "batch", "embed"])
    if kind == "generate":
        body = {"model": MODEL, "prompt": text, "stream": stream, "options": {"num_predict": predict, "temperature": rng.choice([0, 0.8])}}
        return "/api/generate", body, stream, leave, n_words
    if kind == "chat":
        body = {"model": MODEL, "messages": messages, "stream": stream, "options": {"num_predict": predict}}
        return "/api/chat", body, stream, leave, n_words
    if kind == "completions":
        prompts = [text] if rng.random() < 0.6 else [text, words(rng, rng.randint(3, 40))]
        body = {"model": MODEL, "prompt": prompts, "n": rng.randint(1, 3), "max_tokens": predict, "stream": stream}
        return "/v1/completions", body, stream, leave, n_words
    if kind == "chat_completions":
        body = {"model": MODEL, "messages": messages, "n": rng.randint(1, 2), "max_tokens": predict, "stream": stream}
        return "/v1/chat/completions", body, stream, leave, n_words
    if kind == "batch":
        items = [{"messages": [{"role": "system", "content": SYSTEMS[0]}, {"role": "user", "content": words(rng, rng.randint(3, 30))}]} for _ in range(rng.randint(2, 6))]
        items.append({"prompt": text})
        body = {"model": MODEL, "requests": items, "stream": stream, "options": {"num_predict": predict}}
        return "/api/batch", body, stream, leave, n_words
    body = {"model": MODEL, "input": [words(rng, rng.randint(3, 100)) for _ in range(rng.randint(1, 3))]}
    return ("/api/embed" if rng.random() < 0.5 else "/v1/embeddings"), body, False, None, n_words


def run_one(server, spec):
    """The outcome of one request: ok, cancelled (we left), rejected (queue
    full), too_long (past the context), too_big_for_pool (a gang larger than
    the KV pool), or unexpected: ..."""
    path, body, stream, leave, _ = spec
    c = server.conn()
    try:
        c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status in (503, 429):
            r.read()
            return "rejected" if r.getheader("Retry-After") else "unexpected: no Retry-After"
        if r.status == 400:
            err = r.read().decode()
            if "context" in err:
                return "too_long"
            if "KV blocks" in err:
                return "too_big_for_pool"
            return f"unexpected: 400 {err[:200]}"
        if r.status != 200:
            return f"unexpected: {r.status} {r.read()[:200]!r}"
        if not stream:
            v = json.loads(r.read())
            return "ok" if v else "unexpected: empty body"
        lines = 0
        last = b""
        while True:
            line = r.readline()
            if not line:
                break
            if line.strip():
                lines += 1
                last = line.strip()
            if leave is not None and lines >= leave:
                return "cancelled"
        if path.startswith("/v1/"):
            return "ok" if last == b"data: [DONE]" else f"unexpected: stream ended with {last[:200]!r}"
        final = json.loads(last)
        return "ok" if final.get("done") and "error" not in final else f"unexpected: final line {last[:200]!r}"
    except (OSError, ValueError, http.client.HTTPException) as e:
        return f"unexpected: {type(e).__name__}: {e}"
    finally:
        c.close()


def run_mix(server, n, concurrency, seed, short):
    rng = random.Random(seed)
    specs = [make_request(rng, short) for _ in range(n)]
    outcomes = {}
    with cf.ThreadPoolExecutor(concurrency) as pool:
        for spec, outcome in zip(specs, pool.map(lambda s: run_one(server, s), specs)):
            key = outcome if not outcome.startswith("unexpected") else "unexpected"
            outcomes[key] = outcomes.get(key, 0) + 1
            if key == "unexpected":
                print(f"  {spec[0]}: {outcome}", file=sys.stderr)
    return outcomes, specs


def overload(binary, clients):
    """A tiny queue hit by many clients at once."""
    server = Server(binary, ["--max-seqs", "2", "--max-queue", "2", "--kv-memory", "64MiB"])
    rng = random.Random(7)
    specs = [("/v1/completions" if i % 2 else "/api/generate",
              {"model": MODEL, "prompt": words(rng, 20), "max_tokens": 24, "ignore_eos": True} if i % 2 else
              {"model": MODEL, "prompt": words(rng, 20), "stream": False, "options": {"num_predict": 24}}, False, None, 20) for i in range(clients)]
    timings = []

    def timed(spec):
        t = time.time()
        out = run_one(server, spec)
        timings.append((out, time.time() - t))
        return out

    with cf.ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(timed, specs))
    rejected = [t for o, t in timings if o == "rejected"]
    after = run_one(server, ("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 4}}, False, None, 1))
    idle = server.wait_idle()
    server.stop()
    return {
        "clients": clients,
        "accepted_ok": outcomes.count("ok"),
        "rejected": len(rejected),
        "rejection_latency_max_s": round(max(rejected, default=0), 3),
        "other": len(outcomes) - outcomes.count("ok") - len(rejected),
        "after_load": after,
        "blocks_used_after": idle["caravan_kv_blocks_used"],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "caravan"))
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--short", action="store_true", help="no prompts over 1,200 words (CI)")
    p.add_argument("--kv-memory", default="192MiB")
    p.add_argument("--rss-margin", type=float, default=0.10, help="allowed growth of RSS over the warm-up's")
    a = p.parse_args()

    started = time.time()
    server = Server(a.bin, ["--kv-memory", a.kv_memory])
    warm_n = max(a.requests // 2, 30)
    run_mix(server, warm_n, a.concurrency, a.seed + 1000, a.short)
    server.wait_idle()
    rss_warm = server.rss()
    outcomes, specs = run_mix(server, a.requests, a.concurrency, a.seed, a.short)
    after = server.wait_idle()
    rss_after = server.rss()
    server.stop()
    over = overload(a.bin, 48)

    report = {
        "requests": a.requests,
        "warmup_requests": warm_n,
        "concurrency": a.concurrency,
        "outcomes": outcomes,
        "streams_left_mid_way": outcomes.get("cancelled", 0),
        "longest_prompt_words": max(s[4] for s in specs),
        "kv_blocks_used_after": after["caravan_kv_blocks_used"],
        "running_after": after["caravan_running_sequences"],
        "waiting_after": after["caravan_waiting_sequences"],
        "preemptions": after["caravan_preemptions_total"],
        "rss_after_warmup_mib": round(rss_warm / 2**20, 1),
        "rss_after_run_mib": round(rss_after / 2**20, 1),
        "overload": over,
        "seconds": round(time.time() - started, 1),
    }
    print(json.dumps(report, indent=1))
    failures = []
    if outcomes.get("unexpected"):
        failures.append(f"{outcomes['unexpected']} requests ended unexpectedly")
    if after["caravan_kv_blocks_used"] or after["caravan_running_sequences"] or after["caravan_waiting_sequences"]:
        failures.append("blocks or sequences left after the run")
    if rss_after > rss_warm * (1 + a.rss_margin) + (16 << 20):
        failures.append(f"RSS grew from {rss_warm >> 20} MiB to {rss_after >> 20} MiB")
    if over["other"] or over["rejected"] == 0 or over["after_load"] != "ok" or over["blocks_used_after"]:
        failures.append(f"overload: {over}")
    if over["rejection_latency_max_s"] > 1.0:
        failures.append("overload: rejections were slow")
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
