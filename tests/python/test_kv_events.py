"""KV-cache events in vLLM's format, read as llm-d's prefix-cache scorer
reads them: a pyzmq SUB socket and msgpack, against `caravan serve`
processes this script starts itself (servers.py; run by tests/server.rs).

A request's full blocks are announced with the token ids they hold,
evicted blocks are announced, an unloaded model clears everything, and
the replay socket sends again what was published. Then two replicas: a
long prompt prefix sent to one of them is found in the events, which
predict the replica whose prefix cache holds it; the metrics confirm it,
and the time to first token on each replica is reported."""

import os
import statistics
import time
import unittest

import msgpack
import raw_http
import zmq
from servers import ROOT, Server, free_port

MODEL = "smollm2:135m"
BLOCK = 8
END_SEQ = (-1).to_bytes(8, "big", signed=True)


def subscriber(dial=(), bind=()):
    """A router's SUB socket, dialling replicas that bind and bound for
    replicas that dial it."""
    sub = zmq.Context.instance().socket(zmq.SUB)
    for endpoint in dial:
        sub.connect(endpoint)
    for endpoint in bind:
        sub.bind(endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"kv@")
    # A SUB socket gets only what is published after it has joined.
    time.sleep(0.5)
    return sub


def receive(sub, until, timeout=30):
    """Messages (topic, seq, [ts, events, rank]) until `until` holds of
    those received so far."""
    got = []
    deadline = time.time() + timeout
    while not until(got):
        assert time.time() < deadline, f"no such event within {timeout} s; got {got}"
        if sub.poll(200):
            topic, seq, payload = sub.recv_multipart()
            got.append((topic.decode(), int.from_bytes(seq, "big"), msgpack.unpackb(payload)))
    return got


def events(got, replica=None):
    return [e for topic, _, batch in got if replica in (None, topic.split("@")[1]) for e in batch[1]]


def stored(events):
    return [e for e in events if e[0] == "BlockStored"]


def stored_tokens(got, replica):
    return [t for e in stored(events(got, replica)) for t in e[3]]


def complete(server, tokens, max_tokens=1):
    return server.client.completions.create(model=MODEL, prompt=tokens, max_tokens=max_tokens, temperature=0)


class OneReplica(unittest.TestCase):
    """A pool of 22 blocks of 8 tokens (4 MiB of the default model's KV)."""

    @classmethod
    def setUpClass(cls):
        pub, replay = free_port(), free_port()
        cls.endpoint, cls.replay = f"tcp://127.0.0.1:{pub}", f"tcp://127.0.0.1:{replay}"
        cls.server = Server(
            os.path.join(ROOT, "events"),
            "--kv-events", f"tcp://*:{pub}", "--kv-events-replay", cls.replay, "--kv-events-topic", "kv@replica-a@{model}",
            "--block-size", str(BLOCK),
            kv_memory="4MiB",
        )

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_the_block_size_is_announced_in_the_metrics(self):
        status, text = raw_http.request(self.server.url, "GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertIn(f'vllm:cache_config_info{{block_size="{BLOCK}",enable_prefix_caching="True"}} 1', text.splitlines())

    def test_blocks_stored_evicted_cleared_and_replayed(self):
        sub = subscriber(dial=[self.endpoint])
        prompt = list(range(1000, 1036))
        complete(self.server, prompt)
        got = receive(sub, lambda got: stored(events(got)))
        topic, seq, batch = got[0]
        self.assertEqual((topic, seq, len(batch), batch[2]), (f"kv@replica-a@{MODEL}", 0, 3, 0))
        self.assertIsInstance(batch[0], float)
        # The 36 tokens fill four blocks; the fifth is not full.
        (event,) = stored(batch[1])
        tag, hashes, parent, token_ids, block_size, lora_id, medium, lora_name = event
        self.assertEqual((tag, len(hashes), parent, token_ids, block_size), ("BlockStored", 4, None, prompt[:32], BLOCK))
        self.assertEqual((lora_id, medium, lora_name), (None, None, None))
        self.assertTrue(all(isinstance(h, int) for h in hashes) and len(set(hashes)) == 4)

        # The same prompt again finds the four blocks: nothing new to announce.
        complete(self.server, prompt)
        self.assertEqual(sub.poll(500), 0)

        # 170 tokens need all 22 blocks: the four cached ones are evicted,
        # the one released first first.
        complete(self.server, list(range(2000, 2170)))
        got += receive(sub, lambda new: stored(events(new)) and any(e[0] == "BlockRemoved" for e in events(new)))
        (removed,) = [e for e in events(got) if e[0] == "BlockRemoved"]
        self.assertEqual(removed, ["BlockRemoved", hashes, None])
        second = stored(events(got))[1]
        self.assertEqual((second[2], second[3]), (None, list(range(2000, 2168))))
        self.assertEqual(len(second[1]), 21)

        # keep_alive 0 with no prompt unloads the model: its pool is gone.
        status, _ = raw_http.request(self.server.url, "POST", "/api/generate", {"model": MODEL, "keep_alive": 0})
        self.assertEqual(status, 200)
        got += receive(sub, lambda new: ["AllBlocksCleared"] in events(new))
        self.assertEqual([seq for _, seq, _ in got], list(range(len(got))), "sequence numbers count batches from 0")

        # The replay socket sends every batch again, then the end marker.
        dealer = zmq.Context.instance().socket(zmq.DEALER)
        dealer.connect(self.replay)
        dealer.send_multipart([b"", (1).to_bytes(8, "big")])
        replayed = []
        while True:
            self.assertTrue(dealer.poll(5000), "the replay answers")
            empty, seq, payload = dealer.recv_multipart()
            if seq == END_SEQ:
                self.assertEqual((empty, payload), (b"", b""))
                break
            replayed.append((int.from_bytes(seq, "big"), msgpack.unpackb(payload)))
        self.assertEqual(replayed, [(seq, batch) for _, seq, batch in got[1:]])
        dealer.close()
        sub.close()


def prefix_hits(server):
    status, text = raw_http.request(server.url, "GET", "/metrics")
    assert status == 200
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("vllm:prefix_cache_hits_total"))


def ttft(server, tokens):
    started = time.perf_counter()
    stream = server.client.completions.create(model=MODEL, prompt=tokens, max_tokens=2, temperature=0, stream=True)
    next(iter(stream))
    took = time.perf_counter() - started
    for _ in stream:
        pass
    return took


class TwoReplicas(unittest.TestCase):
    def test_the_events_predict_which_replica_holds_a_prefix(self):
        # Replica a binds and the router dials it; replica b dials the
        # router, which binds.
        a, b = free_port(), free_port()
        sub = subscriber(dial=[f"tcp://127.0.0.1:{a}"], bind=[f"tcp://127.0.0.1:{b}"])
        replicas = {
            name: Server(os.path.join(ROOT, f"replica-{name}"), "--kv-events", at, "--kv-events-topic", f"kv@{name}@{{model}}")
            for name, at in (("a", f"tcp://*:{a}"), ("b", f"tcp://127.0.0.1:{b}"))
        }
        # A SUB socket gets only what is published after a PUB has joined.
        time.sleep(0.5)
        try:
            holder, other = [], []
            for round in range(3):
                prefix = [3000 + 1000 * round + i for i in range(1024)]
                # The first request with this prefix goes to replica a.
                complete(replicas["a"], prefix + [1])
                got = receive(sub, lambda got: len(stored_tokens(got, "a")) >= 1024)
                # A router's prediction: the replica whose topic announced
                # blocks holding the prefix's tokens.
                predicted = [name for name in replicas if stored_tokens(got, name)[:1024] == prefix]
                self.assertEqual(predicted, ["a"])
                # Both replicas asked for the prefix with a new ending: the
                # metrics confirm that only the predicted one had it cached.
                before = {name: prefix_hits(r) for name, r in replicas.items()}
                holder.append(ttft(replicas["a"], prefix + [2, 3]))
                other.append(ttft(replicas["b"], prefix + [2, 3]))
                hits = {name: prefix_hits(r) - before[name] for name, r in replicas.items()}
                self.assertEqual(hits, {"a": 1024.0, "b": 0.0})
                # Replica b now holds the prefix too.
                now_b = receive(sub, lambda got: len(stored_tokens(got, "b")) >= 1024)
                self.assertEqual(stored_tokens(now_b, "b")[:1024], prefix)
            print(
                f"time to first token for a 1,026-token prompt whose first 1,024 tokens one replica holds: "
                f"{statistics.median(holder) * 1e3:.0f} ms on it, {statistics.median(other) * 1e3:.0f} ms on the other "
                f"(medians of 3; {statistics.median(other) / statistics.median(holder):.1f}x)"
            )
        finally:
            sub.close()
            for r in replicas.values():
                r.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
