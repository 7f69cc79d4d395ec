"""Drives a running `caravan serve` with the official ollama and openai
Python packages, unchanged, and with raw HTTP for what clients hide
(status codes, error shapes, disconnects). Run by tests/server.rs, which
starts the servers: CARAVAN_URL (defaults, --max-batch-items 16,
--max-body 2MiB, CARAVAN_TEST_FAULTS=1), CARAVAN_TIGHT_URL (--max-seqs 1
--max-queue 1) and CARAVAN_SECURE_URL (--api-key s3cret --cors-origin
http://app.example)."""

import http.client
import json
import math
import os
import re
import socket
import threading
import time
import unittest
import urllib.parse

import ollama
import openai

URL = os.environ["CARAVAN_URL"]
TIGHT_URL = os.environ["CARAVAN_TIGHT_URL"]
SECURE_URL = os.environ["CARAVAN_SECURE_URL"]
FAULT_SEED = 0xFA17
MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "num_predict": 12}

ollama_client = ollama.Client(host=URL)
openai_client = openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0)


def request(method, path, body=None, url=URL, raw=None, headers=None):
    """(status, headers, parsed JSON or text) of one HTTP request."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    text = r.read().decode()
    headers = {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    try:
        return r.status, headers, json.loads(text)
    except ValueError:
        return r.status, headers, text


def samples(url=URL):
    """The /metrics samples as (name, labels, value)."""
    _, _, text = request("GET", "/metrics", url=url)
    for line in text.splitlines():
        m = re.match(r"^([a-z_:]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m:
            yield m.group(1), m.group(2) or "", float(m.group(3))


def metrics(url=URL):
    """The /metrics samples without labels, by name."""
    return {name: value for name, labels, value in samples(url) if not labels}


def vllm_metrics(url=URL):
    """vLLM's samples, as routers read them, by (name, model_name)."""
    out = {}
    for name, labels, value in samples(url):
        m = re.match(r'^\{model_name="([^"]+)"\}$', labels)
        if name.startswith("vllm:") and m:
            out[(name, m.group(1))] = value
    return out


def wait_until_idle(url=URL, seconds=60):
    """Waits until no sequence runs or waits and no KV block is held."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        m = metrics(url)
        if m["caravan_kv_blocks_used"] == 0 and m["caravan_running_sequences"] == 0 and m["caravan_waiting_sequences"] == 0:
            return m
        time.sleep(0.1)
    raise AssertionError(f"the engine did not go idle: {metrics(url)}")


def chat_alone(messages, num_predict=12):
    r = ollama_client.chat(model=MODEL, messages=messages, options={"temperature": 0, "num_predict": num_predict})
    return r.message.content


class OllamaClient(unittest.TestCase):
    def test_generate_and_its_stream_agree(self):
        r = ollama_client.generate(model=MODEL, prompt="Why is the sky blue?", options=GREEDY)
        self.assertTrue(r.done)
        self.assertEqual(r.done_reason, "length")
        self.assertEqual(r.eval_count, 12)
        self.assertGreater(r.prompt_eval_count, 5)
        self.assertGreater(r.total_duration, r.eval_duration)
        parts = list(ollama_client.generate(model=MODEL, prompt="Why is the sky blue?", options=GREEDY, stream=True))
        self.assertTrue(parts[-1].done)
        self.assertTrue(all(not p.done for p in parts[:-1]))
        self.assertEqual("".join(p.response for p in parts), r.response)
        self.assertGreater(len(r.response), 10)

    def test_chat_and_its_stream_agree(self):
        messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a fruit."}]
        r = ollama_client.chat(model=MODEL, messages=messages, options=GREEDY)
        self.assertEqual(r.message.role, "assistant")
        parts = list(ollama_client.chat(model=MODEL, messages=messages, options=GREEDY, stream=True))
        self.assertEqual("".join(p.message.content for p in parts), r.message.content)
        self.assertIn(parts[-1].done_reason, ("stop", "length"))

    def test_stop_and_seed(self):
        r = ollama_client.generate(model=MODEL, prompt="1, 2, 3, 4,", raw=True, options={"temperature": 0, "num_predict": 10, "stop": [","]})
        self.assertEqual(r.response, " 5")
        self.assertEqual(r.done_reason, "stop")
        a = ollama_client.generate(model=MODEL, prompt="Tell me a story.", options={"seed": 42, "num_predict": 10})
        b = ollama_client.generate(model=MODEL, prompt="Tell me a story.", options={"seed": 42, "num_predict": 10})
        self.assertEqual(a.response, b.response)

    def test_embed(self):
        r = ollama_client.embed(model=MODEL, input=["The cat sat.", "Stock prices fell.", "The cat sat."])
        self.assertEqual(len(r.embeddings), 3)
        self.assertEqual(len(r.embeddings[0]), 576)
        self.assertAlmostEqual(math.sqrt(sum(x * x for x in r.embeddings[0])), 1.0, places=4)
        self.assertEqual(r.embeddings[0], r.embeddings[2])
        self.assertNotEqual(r.embeddings[0], r.embeddings[1])
        legacy = ollama_client.embeddings(model=MODEL, prompt="The cat sat.")
        self.assertTrue(all(abs(x - y) < 1e-6 for x, y in zip(legacy.embedding, r.embeddings[0])))

    def test_list_show_ps(self):
        names = [m.model for m in ollama_client.list().models]
        self.assertIn(MODEL, names)
        shown = ollama_client.show(MODEL)
        self.assertEqual(shown.details.family, "llama")
        self.assertEqual(shown.details.quantization_level, "Q4_1")
        self.assertIn("<|im_start|>", shown.template)
        self.assertEqual(shown.modelinfo["llama.context_length"], 8192)
        self.assertEqual(shown.capabilities, ["completion", "chat"])
        ollama_client.generate(model=MODEL, prompt="hi", options={"num_predict": 1})
        self.assertIn(MODEL, [m.model for m in ollama_client.ps().models])


class OpenAIClient(unittest.TestCase):
    def test_completions_prompt_array_with_n(self):
        prompts = ["The capital of France is", "Water boils at"]
        r = openai_client.completions.create(model=MODEL, prompt=prompts, n=3, max_tokens=8, temperature=0)
        self.assertEqual([c.index for c in r.choices], list(range(6)))
        texts = [c.text for c in r.choices]
        # Greedy: the three answers to one prompt agree, and equal the
        # prompt's answer alone.
        for p, prompt in enumerate(prompts):
            alone = openai_client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0).choices[0].text
            self.assertEqual(texts[3 * p : 3 * p + 3], [alone] * 3)
        self.assertNotEqual(texts[0], texts[3])
        self.assertEqual(r.usage.completion_tokens, 6 * 8)

    def test_token_id_prompts(self):
        text = openai_client.completions.create(model=MODEL, prompt="Hello", max_tokens=4, temperature=0).choices[0].text
        # BOS-less token ids of "Hello" give the same answer: no BOS in this model.
        r = request("POST", "/v1/completions", {"model": MODEL, "prompt": [[19556]], "max_tokens": 4, "temperature": 0})
        self.assertEqual(r[0], 200)
        self.assertEqual(r[2]["choices"][0]["text"], text)
        # Without a model, the default model answers (as llama.cpp's and vLLM's servers do).
        r = request("POST", "/v1/completions", {"prompt": "Hello", "max_tokens": 4, "temperature": 0})
        self.assertEqual((r[0], r[2]["model"], r[2]["choices"][0]["text"]), (200, MODEL, text))

    def test_chat_with_n(self):
        r = openai_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi"}], n=2, max_tokens=10, seed=7)
        self.assertEqual(len(r.choices), 2)
        self.assertTrue(all(c.message.role == "assistant" and c.message.content for c in r.choices))
        self.assertEqual(r.object, "chat.completion")

    def test_streaming_chat(self):
        messages = [{"role": "user", "content": "What is 2+2?"}]
        whole = openai_client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
        stream = openai_client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, whole.choices[0].message.content)
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        self.assertEqual(finishes, [whole.choices[0].finish_reason])
        self.assertEqual(chunks[-1].usage.completion_tokens, whole.usage.completion_tokens)

    def test_models_and_embeddings(self):
        self.assertIn(MODEL, [m.id for m in openai_client.models.list().data])
        r = openai_client.embeddings.create(model=MODEL, input=["The cat sat.", "Stock prices fell."])
        self.assertEqual([d.index for d in r.data], [0, 1])
        mine = ollama_client.embed(model=MODEL, input="The cat sat.").embeddings[0]
        self.assertTrue(all(abs(x - y) < 1e-6 for x, y in zip(r.data[0].embedding, mine)))
        floats = request("POST", "/v1/embeddings", {"model": MODEL, "input": "The cat sat.", "encoding_format": "float"})[2]
        self.assertTrue(all(abs(x - y) < 1e-6 for x, y in zip(floats["data"][0]["embedding"], mine)))


CONVERSATIONS = [
    [{"role": "user", "content": q}]
    for q in ["What is the capital of Italy?", "Name a color.", "What is 3 times 3?", "Say a greeting.", "What is a cat?", "Name a planet."]
] + [
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Is water wet?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Tell me a joke."}],
]


class BatchApi(unittest.TestCase):
    def test_eight_conversations_run_together_and_match_solo(self):
        body = {"model": MODEL, "options": {"temperature": 0, "num_predict": 12}, "stream": False, "requests": [{"messages": c} for c in CONVERSATIONS]}
        status, _, r = request("POST", "/api/batch", body)
        self.assertEqual(status, 200, r)
        self.assertEqual([x["index"] for x in r["responses"]], list(range(8)))
        self.assertTrue(r["admitted_together"])
        self.assertEqual({x["started_step"] for x in r["responses"]}, {r["admitted_step"]})
        for c, x in zip(CONVERSATIONS, r["responses"]):
            self.assertEqual(x["message"]["content"], chat_alone(c))
            self.assertTrue(x["done"])

    def test_mixed_items_stream_with_index(self):
        body = {
            "model": MODEL,
            "options": {"temperature": 0, "num_predict": 6},
            "stream": True,
            "requests": [{"prompt": "Why is the sky blue?"}, {"messages": CONVERSATIONS[0], "options": {"num_predict": 3}}],
        }
        u = urllib.parse.urlparse(URL)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        conn.request("POST", "/api/batch", body=json.dumps(body))
        r = conn.getresponse()
        self.assertEqual(r.getheader("Content-Type"), "application/x-ndjson")
        lines = [json.loads(l) for l in r.read().decode().splitlines()]
        finals = {l["index"]: l for l in lines if l.get("done") and "index" in l}
        self.assertEqual(finals[0]["eval_count"], 6)
        self.assertEqual(finals[1]["eval_count"], 3)
        text0 = "".join(l["response"] for l in lines if l.get("index") == 0)
        alone = ollama_client.generate(model=MODEL, prompt="Why is the sky blue?", options={"temperature": 0, "num_predict": 6}).response
        self.assertEqual(text0, alone)
        self.assertTrue(lines[-1]["admitted_together"])
        self.assertEqual(lines[-1]["items"], 2)


def assert_ollama_error(test, status, want, body):
    test.assertEqual(status, want, body)
    test.assertIsInstance(body, dict)
    test.assertIsInstance(body.get("error"), str, body)


def assert_openai_error(test, status, want, body):
    test.assertEqual(status, want, body)
    err = body["error"]
    test.assertEqual(set(err), {"message", "type", "param", "code"}, body)
    test.assertTrue(err["message"])


LONG_PROMPT = "word " * 9000


class BadInput(unittest.TestCase):
    def test_ollama_routes(self):
        cases = [
            ("/api/generate", None, b"{not json", 400),
            ("/api/generate", {"prompt": "hi"}, None, 400),
            ("/api/generate", {"model": MODEL, "prompt": 5}, None, 400),
            ("/api/generate", {"model": MODEL, "prompt": "hi", "options": {"temperature": "hot"}}, None, 400),
            ("/api/generate", {"model": MODEL, "prompt": "hi", "options": {"num_predict": -5}}, None, 400),
            ("/api/generate", {"model": MODEL, "prompt": LONG_PROMPT}, None, 400),
            ("/api/generate", {"model": MODEL, "prompt": "hello there", "options": {"num_ctx": 4}}, None, 400),
            ("/api/generate", {"model": "no-such-model", "prompt": "hi"}, None, 404),
            ("/api/generate", {"model": "../etc/passwd", "prompt": "hi"}, None, 400),
            ("/api/chat", {"model": MODEL, "messages": [{"role": "user"}], "tools": 3}, None, 400),
            ("/api/chat", {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, None, 400),
            ("/api/chat", {"model": MODEL, "messages": "hi"}, None, 400),
            ("/api/embed", {"model": MODEL, "input": [1, 2]}, None, 400),
            ("/api/show", {"model": "no-such-model"}, None, 404),
            ("/api/batch", {"model": MODEL, "requests": []}, None, 400),
            ("/api/batch", {"model": MODEL, "requests": [{"prompt": "x"}] * 17}, None, 400),
            ("/api/batch", {"model": MODEL, "requests": [{"prompt": "x"}, {"nothing": 1}]}, None, 400),
            # Limits, each named in the message.
            ("/api/generate", {"model": MODEL, "prompt": "hi", "options": {"num_predict": 100000}}, None, 400),
            ("/api/generate", {"model": MODEL, "prompt": "hi", "options": {"stop": ["x"] * 17}}, None, 400),
            ("/api/generate", {"model": MODEL, "prompt": "hi", "options": {"stop": ["x" * 300]}}, None, 400),
            ("/api/generate", {"model": MODEL, "prompt": "x" * (3 << 20)}, None, 413),
            ("/api/embed", {"model": MODEL, "input": ["x"] * 17}, None, 400),
        ]
        for path, body, raw, want in cases:
            with self.subTest(path=path, body=str(body)[:80]):
                status, _, r = request("POST", path, body, raw=raw)
                assert_ollama_error(self, status, want, r)
        # The server still serves.
        self.assertTrue(ollama_client.generate(model=MODEL, prompt="hi", options={"num_predict": 2}).done)
        wait_until_idle()

    def test_openai_routes(self):
        msgs = [{"role": "user", "content": "hi"}]
        cases = [
            ("/v1/chat/completions", None, b"[1, 2", 400),
            ("/v1/chat/completions", {"model": MODEL, "messages": []}, None, 400),
            ("/v1/chat/completions", {"model": MODEL}, None, 400),
            ("/v1/chat/completions", {"model": 7, "messages": msgs}, None, 400),
            ("/v1/chat/completions", {"model": MODEL, "messages": msgs, "n": 0}, None, 400),
            ("/v1/chat/completions", {"model": MODEL, "messages": msgs, "n": 17}, None, 400),
            ("/v1/chat/completions", {"model": MODEL, "messages": msgs, "temperature": "warm"}, None, 400),
            ("/v1/chat/completions", {"model": MODEL, "messages": msgs, "max_tokens": -1}, None, 400),
            ("/v1/chat/completions", {"model": "no-such-model", "messages": msgs}, None, 404),
            ("/v1/chat/completions", {"model": "../etc/passwd", "messages": msgs}, None, 400),
            ("/v1/completions", {"model": MODEL, "prompt": LONG_PROMPT}, None, 400),
            ("/v1/completions", {"model": MODEL, "prompt": [[99999999]]}, None, 400),
            ("/v1/completions", {"model": MODEL, "prompt": {"a": 1}}, None, 400),
            ("/v1/embeddings", {"model": MODEL, "input": 5}, None, 400),
            ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 100000}, None, 400),
            ("/v1/completions", {"model": MODEL, "prompt": ["a"] * 9, "n": 2}, None, 400),
            ("/v1/chat/completions", {"model": MODEL, "messages": msgs, "stop": ["a"] * 17}, None, 400),
            ("/v1/chat/completions", {"model": MODEL, "messages": msgs, "logprobs": True, "top_logprobs": 21}, None, 400),
        ]
        for path, body, raw, want in cases:
            with self.subTest(path=path, body=str(body)[:80]):
                status, _, r = request("POST", path, body, raw=raw)
                assert_openai_error(self, status, want, r)
        with self.assertRaises(openai.BadRequestError):
            openai_client.chat.completions.create(model=MODEL, messages=msgs, n=0)
        r = openai_client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=2)
        self.assertEqual(len(r.choices), 1)
        wait_until_idle()


def stream_then_leave(path, body, lines_to_read, url=URL):
    """Reads a few lines of a streamed answer, then closes the socket."""
    u = urllib.parse.urlparse(url)
    s = socket.create_connection((u.hostname, u.port))
    data = json.dumps(body).encode()
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    f = s.makefile("rb")
    read = 0
    while read < lines_to_read:
        line = f.readline()
        if line.strip().startswith(b"{") or line.startswith(b"data:"):
            read += 1
    f.close()
    s.close()


class Disconnects(unittest.TestCase):
    def test_streaming_clients_that_leave_free_their_blocks(self):
        wait_until_idle()
        stream_then_leave("/api/generate", {"model": MODEL, "prompt": "Write a long essay.", "options": {"num_predict": 2000}}, 3)
        stream_then_leave("/v1/completions", {"model": MODEL, "prompt": "Once", "max_tokens": 2000, "ignore_eos": True, "stream": True}, 3)
        stream_then_leave("/api/batch", {"model": MODEL, "stream": True, "options": {"num_predict": 2000}, "requests": [{"prompt": "a"}, {"prompt": "b"}]}, 3)
        wait_until_idle()

    def test_a_waiting_non_streaming_client_that_leaves_is_cancelled(self):
        wait_until_idle()
        u = urllib.parse.urlparse(URL)
        s = socket.create_connection((u.hostname, u.port))
        data = json.dumps({"model": "smollm2:135m", "prompt": "Once", "max_tokens": 4000, "ignore_eos": True}).encode()
        s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        deadline = time.time() + 10
        while metrics()["caravan_running_sequences"] == 0:
            self.assertLess(time.time(), deadline)
            time.sleep(0.05)
        s.close()
        wait_until_idle()


class Backpressure(unittest.TestCase):
    def test_a_full_queue_answers_503_and_429_with_retry_after(self):
        # One sequence at a time, one waiting request: a long request runs,
        # a second waits, and a third is refused.
        long_body = {"model": MODEL, "prompt": "Once", "max_tokens": 400, "ignore_eos": True}
        results = []
        t1 = threading.Thread(target=lambda: results.append(request("POST", "/v1/completions", long_body, url=TIGHT_URL)))
        t1.start()
        deadline = time.time() + 10
        while metrics(TIGHT_URL)["caravan_running_sequences"] < 1:
            self.assertLess(time.time(), deadline)
            time.sleep(0.02)
        t2 = threading.Thread(target=lambda: results.append(request("POST", "/v1/completions", dict(long_body, max_tokens=3), url=TIGHT_URL)))
        t2.start()
        while metrics(TIGHT_URL)["caravan_queued_requests"] < 1:
            self.assertLess(time.time(), deadline)
            time.sleep(0.02)
        status, headers, body = request("POST", "/api/generate", {"model": MODEL, "prompt": "hi", "stream": False}, url=TIGHT_URL)
        assert_ollama_error(self, status, 503, body)
        self.assertEqual(headers.get("retry-after"), "1")
        status, headers, body = request("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, url=TIGHT_URL)
        assert_openai_error(self, status, 429, body)
        self.assertEqual(headers.get("retry-after"), "1")
        t1.join()
        t2.join()
        # Every accepted request completed.
        self.assertEqual(sorted(r[0] for r in results), [200, 200])
        self.assertEqual(sorted(r[2]["usage"]["completion_tokens"] for r in results), [3, 400])
        self.assertGreaterEqual(metrics(TIGHT_URL)["caravan_rejected_requests_total"], 2)
        wait_until_idle(TIGHT_URL)


class Access(unittest.TestCase):
    def test_api_key_guards_every_route_but_health(self):
        self.assertEqual(request("GET", "/health", url=SECURE_URL)[0], 200)
        for path, shape in [("/api/tags", assert_ollama_error), ("/v1/models", assert_openai_error), ("/metrics", assert_ollama_error)]:
            with self.subTest(path=path):
                status, headers, body = request("GET", path, url=SECURE_URL)
                shape(self, status, 401, body)
                self.assertEqual(headers.get("www-authenticate"), "Bearer")
                self.assertEqual(request("GET", path, url=SECURE_URL, headers={"Authorization": "Bearer wrong"})[0], 401)
                self.assertEqual(request("GET", path, url=SECURE_URL, headers={"Authorization": "Bearer s3cret"})[0], 200)
        # The official clients pass the key as they always do.
        keyed = ollama.Client(host=SECURE_URL, headers={"Authorization": "Bearer s3cret"})
        self.assertTrue(keyed.generate(model=MODEL, prompt="hi", options={"num_predict": 2}).done)
        with self.assertRaises(ollama.ResponseError):
            ollama.Client(host=SECURE_URL).generate(model=MODEL, prompt="hi")
        client = openai.OpenAI(base_url=SECURE_URL + "/v1", api_key="s3cret", max_retries=0)
        self.assertEqual(len(client.completions.create(model=MODEL, prompt="hi", max_tokens=2).choices), 1)
        with self.assertRaises(openai.AuthenticationError):
            openai.OpenAI(base_url=SECURE_URL + "/v1", api_key="nope", max_retries=0).models.list()

    def test_cors_only_when_an_origin_is_set(self):
        preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
        status, headers, _ = request("OPTIONS", "/api/chat", url=SECURE_URL, headers=preflight)
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("access-control-allow-origin"), "http://app.example")
        _, headers, _ = request("GET", "/api/version", url=SECURE_URL, headers={"Origin": "http://evil.example", "Authorization": "Bearer s3cret"})
        self.assertNotIn("access-control-allow-origin", headers)
        _, headers, _ = request("GET", "/api/version", headers={"Origin": "http://app.example"})
        self.assertNotIn("access-control-allow-origin", headers)


class Faults(unittest.TestCase):
    def test_a_panicking_handler_fails_only_its_request(self):
        status, _, body = request("POST", "/api/generate", {"model": MODEL, "prompt": "hi", "caravan_test_panic": True})
        assert_ollama_error(self, status, 500, body)
        status, _, body = request("POST", "/v1/completions", {"model": MODEL, "prompt": "hi", "caravan_test_panic": True})
        assert_openai_error(self, status, 500, body)
        self.assertTrue(ollama_client.generate(model=MODEL, prompt="hi", options={"num_predict": 2}).done)

    def test_a_sequence_failing_in_the_engine_fails_alone(self):
        wait_until_idle()
        alone = ollama_client.generate(model=MODEL, prompt="Why is the sky blue?", options={"temperature": 0, "num_predict": 40}).response
        results = {}
        def good():
            results["good"] = ollama_client.generate(model=MODEL, prompt="Why is the sky blue?", options={"temperature": 0, "num_predict": 40}).response
        t = threading.Thread(target=good)
        t.start()
        time.sleep(0.2)
        status, _, body = request("POST", "/api/generate", {"model": MODEL, "prompt": "hi", "stream": False, "options": {"seed": FAULT_SEED, "num_predict": 5}})
        assert_ollama_error(self, status, 500, body)
        # Streaming, the failure is the stream's last line, as Ollama does.
        status, _, body = request("POST", "/api/generate", {"model": MODEL, "prompt": "hi", "options": {"seed": FAULT_SEED}})
        self.assertEqual(status, 200)
        self.assertIsInstance(body["error"], str)
        t.join()
        self.assertEqual(results["good"], alone)
        wait_until_idle()


class Surface(unittest.TestCase):
    def test_metrics_health_version_root_openapi(self):
        m = metrics()
        for name in ["caravan_kv_blocks_total", "caravan_prompt_tokens_total", "caravan_generation_tokens_total", "caravan_preemptions_total",
                     "caravan_prefix_cache_hit_tokens_total", "caravan_time_to_first_token_seconds_count", "caravan_time_per_output_token_seconds_count",
                     "caravan_queue_time_seconds_count", "caravan_batch_size_count"]:
            self.assertIn(name, m)
        self.assertGreater(m["caravan_kv_blocks_total"], 0)
        self.assertEqual(request("GET", "/health")[0], 200)
        self.assertEqual(request("GET", "/api/version")[2]["version"], "0.1.0")
        self.assertEqual(request("GET", "/")[0], 200)
        self.assertEqual(request("HEAD", "/")[0], 200)
        spec = request("GET", "/openapi.json")[2]
        for path in ["/api/generate", "/api/chat", "/api/batch", "/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/metrics"]:
            self.assertIn(path, spec["paths"])

    def test_prefix_cache_hits_are_counted(self):
        system = "You are a helpful assistant who answers briefly. " * 8
        before = metrics()["caravan_prefix_cache_hit_tokens_total"]
        for q in ["Hi", "Hello"]:
            ollama_client.chat(model=MODEL, messages=[{"role": "system", "content": system}, {"role": "user", "content": q}], options={"num_predict": 1})
        self.assertGreaterEqual(metrics()["caravan_prefix_cache_hit_tokens_total"] - before, 64)

    def test_vllm_names_for_load_and_prefix_aware_routers(self):
        system = "You are a helpful assistant who answers briefly. " * 8
        ollama_client.generate(model=MODEL, prompt="hi", options={"num_predict": 1})
        before = vllm_metrics()
        prompts = 0
        for q in ["Hi", "Hello"]:
            r = ollama_client.chat(model=MODEL, messages=[{"role": "system", "content": system}, {"role": "user", "content": q}], options={"num_predict": 1})
            prompts += r.prompt_eval_count
        after = vllm_metrics()
        delta = lambda name: after[(name, MODEL)] - before.get((name, MODEL), 0)
        self.assertEqual(delta("vllm:prefix_cache_queries_total"), prompts)
        self.assertGreaterEqual(delta("vllm:prefix_cache_hits_total"), 64)
        self.assertEqual(delta("vllm:time_to_first_token_seconds_count"), 2)
        self.assertEqual(delta("vllm:request_queue_time_seconds_count"), 2)
        # While a long answer runs, the engine's state shows.
        long_body = {"model": MODEL, "prompt": "Count: 1 2 3", "max_tokens": 400, "ignore_eos": True}
        t = threading.Thread(target=lambda: request("POST", "/v1/completions", long_body))
        t.start()
        deadline = time.time() + 30
        while vllm_metrics()[("vllm:num_requests_running", MODEL)] < 1:
            self.assertLess(time.time(), deadline)
            time.sleep(0.02)
        busy = vllm_metrics()
        t.join()
        usage = busy[("vllm:kv_cache_usage_perc", MODEL)]
        self.assertTrue(0 < usage <= 1, usage)
        self.assertEqual(busy[("vllm:gpu_cache_usage_perc", MODEL)], usage)
        self.assertEqual(busy[("vllm:num_requests_waiting", MODEL)], 0)
        wait_until_idle()
        idle = vllm_metrics()
        self.assertEqual((idle[("vllm:num_requests_running", MODEL)], idle[("vllm:kv_cache_usage_perc", MODEL)]), (0, 0))

    def test_another_model_replaces_the_idle_one(self):
        # --max-loaded-models 1: naming another installed model unloads the
        # idle default model and loads it; naming the default brings it back.
        r = ollama_client.generate(model="smol-copy", prompt="hi", options={"num_predict": 2, "temperature": 0})
        self.assertTrue(r.done)
        self.assertEqual([m.model for m in ollama_client.ps().models], ["smol-copy:latest"])
        ollama_client.generate(model=MODEL, prompt="hi", options={"num_predict": 2})
        self.assertEqual([m.model for m in ollama_client.ps().models], [MODEL])


# llama.cpp's tokenizations of the default model's prompts.
GOLDEN = [json.loads(line) for line in open(os.path.join(os.path.dirname(__file__), "..", "data", "smollm2-greedy.jsonl"))]


class Tokenizer(unittest.TestCase):
    def test_tokenize_in_llama_cpp_s_and_vllm_s_shapes_gives_llama_cpp_s_tokens(self):
        for row in GOLDEN:
            status, _, body = request("POST", "/tokenize", {"content": row["prompt"]})
            self.assertEqual((status, body), (200, {"tokens": row["prompt_tokens"]}), row["id"])
            status, _, body = request("POST", "/detokenize", {"tokens": row["prompt_tokens"]})
            self.assertEqual((status, body["content"], body["prompt"]), (200, row["prompt"], row["prompt"]), row["id"])
            if row["kind"] == "chat":
                status, _, body = request("POST", "/tokenize", {"model": MODEL, "messages": row["messages"]})
                self.assertEqual((status, body["tokens"], body["count"]), (200, row["prompt_tokens"], len(row["prompt_tokens"])), row["id"])
                self.assertEqual(body["max_model_len"], 8192)
            else:
                status, _, body = request("POST", "/tokenize", {"model": MODEL, "prompt": row["prompt"]})
                self.assertEqual((status, body["tokens"]), (200, row["prompt_tokens"]), row["id"])

    def test_pieces_strings_and_plain_text(self):
        _, _, body = request("POST", "/tokenize", {"content": "<|im_start|>Hi", "with_pieces": True})
        self.assertEqual(body["tokens"], [{"id": 1, "piece": "<|im_start|>"}, {"id": 26843, "piece": "Hi"}])
        _, _, body = request("POST", "/tokenize", {"content": "<|im_start|>", "parse_special": False})
        self.assertNotIn(1, body["tokens"])
        _, _, body = request("POST", "/tokenize", {"prompt": "Hi there", "return_token_strs": True})
        self.assertEqual(body["token_strs"], ["Hi", " there"])
        # The count a client wants before sending a chat request.
        messages = [{"role": "user", "content": "Hi"}]
        _, _, body = request("POST", "/tokenize", {"messages": messages})
        r = openai_client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1)
        self.assertEqual(body["count"], r.usage.prompt_tokens)

    def test_bad_tokenizer_requests_are_400(self):
        for path, body, needle in [
            ("/tokenize", {"content": 5}, "content must be a string"),
            ("/tokenize", {"content": "a", "add_special_tokens": True}, "add_special_tokens is not supported"),
            ("/tokenize", {"prompt": "a", "messages": []}, "not both"),
            ("/tokenize", {}, "is required"),
            ("/detokenize", {"tokens": [49152]}, "below 49152"),
            ("/detokenize", {"tokens": "1 2"}, "array of token ids"),
        ]:
            status, _, answer = request("POST", path, body)
            assert_openai_error(self, status, 400, answer)
            self.assertIn(needle, answer["error"]["message"], (path, body))

    def test_a_completions_prompt_is_raw_a_chat_message_is_not(self):
        # The caller's own template: control tokens count, as vLLM and
        # llama.cpp read a completions prompt.
        prompt = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        r = openai_client.completions.create(model=MODEL, prompt=prompt, max_tokens=1)
        _, _, body = request("POST", "/tokenize", {"content": prompt})
        self.assertEqual(r.usage.prompt_tokens, len(body["tokens"]))
        r = openai_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=1)
        _, _, plain = request("POST", "/tokenize", {"content": prompt, "parse_special": False})
        self.assertGreater(r.usage.prompt_tokens, len(plain["tokens"]))


def loaded_models(url=URL):
    """{name: expires_at as a datetime} of /api/ps."""
    import datetime
    _, _, body = request("GET", "/api/ps", url=url)
    utc = datetime.timezone.utc
    return {m["model"]: datetime.datetime.strptime(m["expires_at"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=utc) for m in body["models"]}


def wait_for(condition, seconds=10):
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


class KeepAlive(unittest.TestCase):
    def test_keep_alive_sets_expiry_and_unloads_when_it_passes(self):
        import datetime
        now = lambda: datetime.datetime.now(datetime.timezone.utc)
        ollama_client.generate(model=MODEL, prompt="hi", options={"num_predict": 1}, keep_alive="1h")
        left = loaded_models()[MODEL] - now()
        self.assertTrue(datetime.timedelta(minutes=59) < left <= datetime.timedelta(hours=1), left)
        ollama_client.generate(model=MODEL, prompt="hi", options={"num_predict": 1}, keep_alive=-1)
        self.assertEqual(loaded_models()[MODEL].year, 9999)
        ollama_client.generate(model=MODEL, prompt="hi", options={"num_predict": 1}, keep_alive=1)
        self.assertLess(loaded_models()[MODEL] - now(), datetime.timedelta(seconds=1))
        started = time.time()
        self.assertTrue(wait_for(lambda: MODEL not in loaded_models()))
        self.assertGreater(time.time() - started, 0.5)
        # The next request loads it again, under the server's keep-alive.
        r = ollama_client.generate(model=MODEL, prompt="hi", options={"num_predict": 1})
        self.assertGreater(r.load_duration, 0)
        self.assertGreater(loaded_models()[MODEL] - now(), datetime.timedelta(minutes=4))

    def test_keep_alive_zero_without_a_prompt_unloads_after_running_requests(self):
        # A long answer (ignore_eos: every one of its tokens, seconds of work
        # however fast the machine) runs while the unload is asked for.
        stream = openai_client.completions.create(model=MODEL, prompt="Hi", max_tokens=2000, stream=True, extra_body={"ignore_eos": True})
        first = next(stream)
        self.assertIsNone(first.choices[0].finish_reason)
        # The metrics read the engine's state as of its last step's end,
        # which may come just after the step's first token.
        self.assertTrue(wait_for(lambda: metrics()["caravan_running_sequences"] == 1))
        r = ollama_client.generate(model=MODEL, keep_alive=0)
        self.assertEqual((r.done, r.done_reason), (True, "unload"))
        # Loaded whenever the answer is seen running (ps first: a sequence
        # running after it was running at it).
        seen_running = 0
        while True:
            present = MODEL in loaded_models()
            if metrics()["caravan_running_sequences"] == 0:
                break
            self.assertTrue(present)
            seen_running += 1
            time.sleep(0.05)
        self.assertGreater(seen_running, 0)
        chunks = list(stream)
        self.assertEqual(chunks[-1].choices[0].finish_reason, "length")
        self.assertTrue(wait_for(lambda: MODEL not in loaded_models()))
        # Chat without messages loads it again, as Ollama's does.
        r = ollama_client.chat(model=MODEL, messages=[])
        self.assertEqual(r.done_reason, "load")
        self.assertIn(MODEL, loaded_models())
        r = ollama_client.chat(model=MODEL, messages=[], keep_alive=0)
        self.assertEqual(r.done_reason, "unload")
        self.assertTrue(wait_for(lambda: MODEL not in loaded_models()))

    def test_a_bad_keep_alive_is_a_400_and_unload_needs_an_installed_model(self):
        for value in ["5 minutes", "m", True, [1]]:
            status, _, body = request("POST", "/api/generate", {"model": MODEL, "prompt": "hi", "keep_alive": value, "stream": False})
            assert_ollama_error(self, status, 400, body)
            self.assertIn("keep_alive", body["error"])
        status, _, body = request("POST", "/api/generate", {"model": "nope:1b", "keep_alive": 0})
        assert_ollama_error(self, status, 404, body)


class Fields(unittest.TestCase):
    def test_penalties_are_applied_on_both_apis(self):
        prompt = "The capital of France is"
        plain = ollama_client.generate(model=MODEL, prompt=prompt, raw=True, options={"temperature": 0, "num_predict": 24, "repeat_penalty": 1})
        pushed = ollama_client.generate(model=MODEL, prompt=prompt, raw=True, options={
            "temperature": 0, "num_predict": 24, "repeat_penalty": 1, "presence_penalty": 1.5})
        self.assertNotEqual(plain.response, pushed.response)
        r = openai_client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0, presence_penalty=1.5)
        self.assertEqual(r.choices[0].text, pushed.response)
        status, _, body = request("POST", "/v1/completions", {"model": MODEL, "prompt": "x", "frequency_penalty": 3})
        assert_openai_error(self, status, 400, body)

    def test_developer_is_system(self):
        ask = [{"role": "user", "content": "Hi"}]
        a = openai_client.chat.completions.create(model=MODEL, messages=[{"role": "developer", "content": "Answer in French."}] + ask, max_tokens=8, temperature=0)
        b = openai_client.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": "Answer in French."}] + ask, max_tokens=8, temperature=0)
        self.assertEqual((a.choices[0].message.content, a.usage.prompt_tokens), (b.choices[0].message.content, b.usage.prompt_tokens))

    def test_fields_not_implemented_are_refused_by_name(self):
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": False}
        for path, body, needle in [
            ("/api/chat", {**chat, "think": True}, "does not support thinking"),
            ("/api/generate", {"model": MODEL, "prompt": "x", "think": "high"}, "does not support thinking"),
            ("/api/chat", {**chat, "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}, "images"),
            ("/api/embed", {"model": MODEL, "input": "x", "dimensions": 8}, "dimensions"),
            ("/v1/completions", {"model": MODEL, "prompt": "x", "best_of": 3}, "best_of"),
        ]:
            status, _, answer = request("POST", path, body)
            self.assertEqual(status, 400, (path, body, answer))
            message = answer["error"]["message"] if isinstance(answer["error"], dict) else answer["error"]
            self.assertIn(needle, message, (path, body))
        r = ollama_client.chat(model=MODEL, messages=[{"role": "user", "content": "x"}], think=False, options={"num_predict": 1})
        self.assertTrue(r.done)


# Every request field of the published APIs (OpenAI's API reference for
# chat and legacy completions, Ollama's docs/api.md for generate and chat)
# with a value that asks for it: each is honoured (200) or refused with a
# 400 naming it, never dropped.
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
FIELD_WALK = [
    ("/v1/chat/completions", CHAT, {
        "frequency_penalty": 0.5, "max_completion_tokens": 2, "max_tokens": 2, "n": 2, "parallel_tool_calls": True, "presence_penalty": 0.5,
        "prompt_cache_key": "k", "response_format": {"type": "json_object"}, "safety_identifier": "u1", "seed": 3, "service_tier": "auto",
        "stop": ["x"], "stream": False, "stream_options": {"include_usage": True}, "temperature": 0.5, "top_p": 0.9, "user": "u1",
        "modalities": ["text"], "tool_choice": "none", "logprobs": True, "top_logprobs": 0,
    }, {
        "audio": {"voice": "alloy", "format": "mp3"}, "function_call": "auto", "functions": [{"name": "f"}], "logit_bias": {"1": 5},
        "metadata": {"a": "b"}, "prediction": {"type": "content", "content": "x"},
        "reasoning_effort": "low", "store": True, "verbosity": "low", "web_search_options": {}, "modalities": ["text", "audio"],
        "service_tier": "flex",
    }),
    ("/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 2}, {
        "best_of": 1, "frequency_penalty": 0.5, "n": 2, "presence_penalty": 0.5, "seed": 3, "stop": "x", "stream": False,
        "temperature": 0.5, "top_p": 0.9, "user": "u1", "logprobs": 2,
    }, {"best_of": 2, "echo": True, "logit_bias": {"1": 5}, "suffix": "end"}),
    ("/api/generate", {"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 2}}, {
        "format": "json", "system": "Be brief.", "raw": True, "keep_alive": "5m", "think": False,
        "options": {"num_predict": 2, "temperature": 0.5, "presence_penalty": 0.5, "frequency_penalty": 0.5},
        "logprobs": True, "top_logprobs": 0,
    }, {"suffix": "end", "images": ["aGk="], "template": "{{ .Prompt }}", "context": [1, 2], "think": True}),
    ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": False, "options": {"num_predict": 2}}, {
        "format": "json", "keep_alive": "5m", "think": False, "logprobs": True, "top_logprobs": 0,
    }, {"think": True}),
]


class FieldWalk(unittest.TestCase):
    def test_every_published_field_is_honoured_or_refused_by_name(self):
        for path, base, honoured, refused in FIELD_WALK:
            for key, value in honoured.items():
                status, _, body = request("POST", path, {**base, key: value})
                self.assertEqual(status, 200, (path, key, value, body))
            for key, value in refused.items():
                status, _, body = request("POST", path, {**base, key: value})
                self.assertEqual(status, 400, (path, key, value, body))
                message = body["error"]["message"] if isinstance(body["error"], dict) else body["error"]
                self.assertTrue(key in message or (key == "think" and "thinking" in message), (path, key, message))


if __name__ == "__main__":
    unittest.main(verbosity=2)
