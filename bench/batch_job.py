#!/usr/bin/env python3
"""Batch jobs on `caravan serve`, measured (standard library only):

each of --rounds rounds measures `caravan bench --batch 64` with the job's
lengths (its output tokens/s over prefill and decode), then, on a fresh
server: an interactive client's time to first token when idle; a job of
--items completions (--prompt distinct token ids each, --gen tokens with
ignore_eos) uploaded through /v1/files and run through /v1/batches, its
output tokens/s; and the same client's time to first token while the job
runs. Last, the server's peak RSS over jobs of --small-items, --rss-items
and --small-items again (memory must not grow with the number of items).
With --crash-at N, only this: a job killed with SIGKILL after N answers
and resumed by a new server on the same data.

The server is `caravan serve` (CARAVAN, default target/release/caravan)
with the installed default model and --serve-flag's. Prints one JSON
object: each round's figures and the medians of the ratios."""

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.parse


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, method, path, body=None, raw=None, headers=None, parse=True):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers=headers or {"Content-Type": "application/json"})
    r = conn.getresponse()
    text = r.read()
    conn.close()
    return r.status, json.loads(text) if parse and text[:1] in (b"{", b"[") else text


def upload(url, content):
    boundary = "caravanbench"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
            "Content-Type: application/jsonl\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    status, body = call(url, "POST", "/v1/files", raw=form, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, body
    return body["id"]


def job_file(items, prompt, gen, seed):
    rng = random.Random(seed)
    lines = []
    for i in range(items):
        tokens = [rng.randrange(1000, 40000) for _ in range(prompt)]
        body = {"prompt": tokens, "max_tokens": gen, "temperature": 0, "ignore_eos": True}
        lines.append(json.dumps({"custom_id": f"item-{i}", "method": "POST", "url": "/v1/completions", "body": body}))
    return ("\n".join(lines) + "\n").encode()


def run_job(url, content):
    file_id = upload(url, content)
    status, batch = call(url, "POST", "/v1/batches", {"input_file_id": file_id, "endpoint": "/v1/completions", "completion_window": "24h"})
    assert status == 200, batch
    return batch["id"]


def wait(url, batch_id, poll=0.2):
    while True:
        _, b = call(url, "GET", f"/v1/batches/{batch_id}")
        if b["status"] in ("completed", "failed", "cancelled", "expired"):
            return b
        time.sleep(poll)


def first_token_seconds(url, prompt_tokens):
    """One streamed completion: seconds until its first token arrives."""
    body = {"prompt": prompt_tokens, "max_tokens": 4, "temperature": 0, "ignore_eos": True, "stream": True}
    u = urllib.parse.urlparse(url)
    start = time.perf_counter()
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    conn.request("POST", "/v1/completions", body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    first = None
    for line in r:
        if line.startswith(b"data: {") and first is None and json.loads(line[6:])["choices"][0]["text"]:
            first = time.perf_counter() - start
    conn.close()
    return first


def probes(url, n, prompt, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        out.append(first_token_seconds(url, [rng.randrange(1000, 40000) for _ in range(prompt)]))
        time.sleep(0.1)
    return out


class RssWatch:
    """The peak resident memory of a process, sampled every 50 ms."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0, False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)
            time.sleep(0.05)

    def end(self):
        self.stop = True
        self.thread.join()
        return self.peak


def start_server(binary, data, flags):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(os.path.join(data, "server.log"), "a")
    server = subprocess.Popen([binary, "serve", "--host", f"127.0.0.1:{port}", "--data-dir", data, *flags],
                              stdout=subprocess.DEVNULL, stderr=log)
    while True:
        try:
            if call(url, "GET", "/health")[0] == 200:
                return server, url
        except OSError:
            time.sleep(0.1)


def bench_output_rate(binary, prompt, gen, batch):
    """`caravan bench`'s row for `batch` sequences: output tokens/s over
    the whole run (prefill and decode), as a job's rate is counted."""
    out = subprocess.run([binary, "bench", "--prompt", str(prompt), "--gen", str(gen), "--batch", str(batch), "--shared-prompt", "0"],
                         capture_output=True, text=True, check=True).stdout
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == [str(batch)])
    return float(row[3]) * gen / (prompt + gen)


def one_round(binary, a):
    with tempfile.TemporaryDirectory() as data:
        server, url = start_server(binary, data, a.serve_flag)
        try:
            probes(url, 3, a.probe_prompt, 0)  # warm-up
            idle = probes(url, a.probes, a.probe_prompt, 1)
            started = time.perf_counter()
            batch_id = run_job(url, job_file(a.items, a.prompt, a.gen, 2))
            time.sleep(3)
            loaded = probes(url, a.probes, a.probe_prompt, 3)
            b = wait(url, batch_id)
            wall = time.perf_counter() - started
            assert b["request_counts"]["completed"] == a.items, b
        finally:
            server.terminate()
            server.wait()
    return a.items * a.gen / wall, statistics.median(idle), statistics.median(loaded)


def memory(binary, a):
    """Peak RSS over jobs of each size, on a server whose KV pool is small
    enough to be all in use in each (so what grows is the rest)."""
    rss = {}
    with tempfile.TemporaryDirectory() as data:
        server, url = start_server(binary, data, ["--kv-memory", "256MiB", *a.serve_flag])
        try:
            for n in (a.small_items, a.rss_items, a.small_items):
                watch = RssWatch(server.pid)
                done = wait(url, run_job(url, job_file(n, 16, 4, 4)), poll=1)
                assert done["request_counts"]["completed"] == n, done
                rss.setdefault(n, []).append(round(watch.end() / 2**20, 1))
        finally:
            server.terminate()
            server.wait()
    return rss


def crash_resume(binary, a):
    """A job of --items killed with SIGKILL once --crash-at items are
    answered, then the server started again on the same data: the answers
    kept, the seconds until the job runs again, and whether the output
    holds each custom_id once."""
    with tempfile.TemporaryDirectory() as data:
        server, url = start_server(binary, data, a.serve_flag)
        batch_id = run_job(url, job_file(a.items, a.prompt, a.gen, 5))
        while call(url, "GET", f"/v1/batches/{batch_id}")[1]["request_counts"]["completed"] < a.crash_at:
            time.sleep(0.05)
        server.kill()
        server.wait()
        restarted = time.perf_counter()
        server, url = start_server(binary, data, a.serve_flag)
        try:
            b = call(url, "GET", f"/v1/batches/{batch_id}")[1]
            kept = b["request_counts"]["completed"]
            while call(url, "GET", f"/v1/batches/{batch_id}")[1]["request_counts"]["completed"] == kept:
                time.sleep(0.02)
            running_again = time.perf_counter() - restarted
            b = wait(url, batch_id)
            _, out = call(url, "GET", f"/v1/files/{b['output_file_id']}/content", parse=False)
            ids = [json.loads(line)["custom_id"] for line in out.splitlines()]
        finally:
            server.terminate()
            server.wait()
    return {"items": a.items, "answered_before_kill": kept, "seconds_to_running_again": round(running_again, 2),
            "status": b["status"], "output_lines": len(ids), "distinct_custom_ids": len(set(ids))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--probes", type=int, default=15)
    ap.add_argument("--probe-prompt", type=int, default=32)
    ap.add_argument("--small-items", type=int, default=1000)
    ap.add_argument("--rss-items", type=int, default=10000)
    ap.add_argument("--serve-flag", action="append", default=[], help="extra flags for caravan serve")
    ap.add_argument("--crash-at", type=int, default=0, help="only the crash-resume run: SIGKILL after this many answers")
    a = ap.parse_args()
    binary = os.environ.get("CARAVAN", "target/release/caravan")
    if a.crash_at:
        print(json.dumps(crash_resume(binary, a), indent=1))
        return
    rounds = []
    for _ in range(a.rounds):
        baseline = bench_output_rate(binary, a.prompt, a.gen, 64)
        rounds.append((baseline, *one_round(binary, a)))
    med = lambda k: statistics.median(r[k] for r in rounds)
    report = {
        "items": a.items, "prompt_tokens": a.prompt, "gen_tokens": a.gen, "serve_flags": a.serve_flag,
        "job_output_tok_s": [round(r[1], 1) for r in rounds],
        "bench_batch64_output_tok_s": [round(r[0], 1) for r in rounds],
        "job_over_bench": round(statistics.median(r[1] / r[0] for r in rounds), 2),
        "ttft_idle_ms": [round(r[2] * 1e3, 1) for r in rounds],
        "ttft_under_job_ms": [round(r[3] * 1e3, 1) for r in rounds],
        "ttft_ratio": round(statistics.median(r[3] / r[2] for r in rounds), 2),
        "median_job_output_tok_s": round(med(1), 1),
        "peak_rss_mib_by_items": memory(binary, a) if a.rss_items else None,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
