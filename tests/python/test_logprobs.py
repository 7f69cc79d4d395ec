"""Log-probabilities through the official ollama and openai Python
packages, unchanged, against a running `caravan serve --arithmetic ggml`
(CARAVAN_URL, the default model; run by tests/server.rs): every API's
shape, streamed and not, against llama.cpp's own log-probabilities of the
same file (tests/data/smollm2-greedy.jsonl), and by raw HTTP for errors."""

import json
import math
import os
import unittest

import ollama
import openai
import raw_http

URL = os.environ["CARAVAN_URL"]
MODEL = "smollm2:135m"
# The reference rounds to 4 decimals.
TOLERANCE = 1e-3

ollama_client = ollama.Client(host=URL)
openai_client = openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0)

with open(os.path.join(os.path.dirname(__file__), "..", "data", "smollm2-greedy.jsonl")) as f:
    ROWS = [json.loads(line) for line in f]
TEXT_ROWS = [r for r in ROWS if r["kind"] == "text"]
CHAT_ROWS = [r for r in ROWS if r["kind"] == "chat"]
POSITIONS = len(ROWS[0]["top_logprobs"])


def request(method, path, body=None):
    return raw_http.request(URL, method, path, body)


class Reference(unittest.TestCase):
    def assert_position(self, row, p, token, logprob, top, at):
        """One position's drawn token and (token, logprob) alternatives
        against the reference's: the same values rank by rank, and each
        text the reference lists once with its own value (near-equal
        alternatives may trade places)."""
        want = row["top_logprobs"][p]
        self.assertEqual(token, want[0]["token"], at)
        self.assertAlmostEqual(logprob, want[0]["logprob"], delta=TOLERANCE, msg=at)
        self.assertEqual(len(top), len(want), at)
        for k, ((_, lp), w) in enumerate(zip(top, want)):
            self.assertAlmostEqual(lp, w["logprob"], delta=TOLERANCE, msg=f"{at} rank {k}")
        texts = [w["token"] for w in want]
        for text, lp in top:
            if texts.count(text) == 1:
                self.assertAlmostEqual(lp, want[texts.index(text)]["logprob"], delta=TOLERANCE, msg=f"{at} {text!r}")

    def test_openai_completions_equal_the_reference_for_every_text_row(self):
        # Every text row's prompt in one request: one gang of sequences.
        prompts = [r["prompt"] for r in TEXT_ROWS]
        out = openai_client.completions.create(model=MODEL, prompt=prompts, max_tokens=POSITIONS, temperature=0, logprobs=5)
        self.assertEqual(len(out.choices), len(TEXT_ROWS))
        for row, choice in zip(TEXT_ROWS, sorted(out.choices, key=lambda c: c.index)):
            lp = choice.logprobs
            self.assertEqual(len(lp.tokens), POSITIONS)
            self.assertEqual("".join(lp.tokens), choice.text)
            offsets = [sum(len(t) for t in lp.tokens[:k]) for k in range(POSITIONS)]
            self.assertEqual(lp.text_offset, offsets)
            for p in range(POSITIONS):
                # The map holds the five likeliest; the drawn token is one.
                top = sorted(lp.top_logprobs[p].items(), key=lambda kv: -kv[1])
                self.assert_position(row, p, lp.tokens[p], lp.token_logprobs[p], top, f"row {row['id']} position {p}")

    def test_openai_chat_equals_the_reference_for_every_chat_row(self):
        for row in CHAT_ROWS:
            out = openai_client.chat.completions.create(
                model=MODEL, messages=row["messages"], max_tokens=POSITIONS, temperature=0, logprobs=True, top_logprobs=5)
            content = out.choices[0].logprobs.content
            self.assertEqual(len(content), out.usage.completion_tokens)
            self.assertEqual("".join(c.token for c in content), out.choices[0].message.content)
            for p, c in enumerate(content[:POSITIONS]):
                self.assertEqual(bytes(c.bytes), c.token.encode())
                top = [(t.token, t.logprob) for t in c.top_logprobs]
                self.assert_position(row, p, c.token, c.logprob, top, f"row {row['id']} position {p}")

    def test_ollama_generate_and_chat_equal_the_reference(self):
        # Ollama's default repeat penalty (1.1) would change the draws.
        options = {"temperature": 0, "repeat_penalty": 1, "num_predict": POSITIONS}
        for row in TEXT_ROWS[:6]:
            out = ollama_client.generate(model=MODEL, prompt=row["prompt"], raw=True, options=options, logprobs=True, top_logprobs=5)
            self.assertEqual(len(out.logprobs), out.eval_count)
            for p, lp in enumerate(out.logprobs):
                top = [(t.token, t.logprob) for t in lp.top_logprobs]
                self.assert_position(row, p, lp.token, lp.logprob, top, f"generate row {row['id']} position {p}")
        for row in CHAT_ROWS[:3]:
            out = ollama_client.chat(model=MODEL, messages=row["messages"], options=options, logprobs=True, top_logprobs=5)
            for p, lp in enumerate(out.logprobs[:POSITIONS]):
                top = [(t.token, t.logprob) for t in lp.top_logprobs]
                self.assert_position(row, p, lp.token, lp.logprob, top, f"chat row {row['id']} position {p}")

    def test_a_batch_item_carries_its_own(self):
        rows = TEXT_ROWS[:3]
        items = [{"prompt": r["prompt"], "raw": True, "logprobs": True, "top_logprobs": 5} for r in rows]
        items.append({"prompt": rows[0]["prompt"], "raw": True})
        status, body = request("POST", "/api/batch", {"model": MODEL, "requests": items, "options": {"temperature": 0, "repeat_penalty": 1, "num_predict": POSITIONS}})
        self.assertEqual(status, 200, body)
        for row, item in zip(rows, body["responses"]):
            for p, lp in enumerate(item["logprobs"]):
                top = [(t["token"], t["logprob"]) for t in lp["top_logprobs"]]
                self.assert_position(row, p, lp["token"], lp["logprob"], top, f"batch row {row['id']} position {p}")
        self.assertNotIn("logprobs", body["responses"][3])


class Streams(unittest.TestCase):
    """A streamed answer's log-probabilities, gathered over its chunks or
    lines, are the unstreamed answer's: one per token, in order."""

    def test_openai_chat(self):
        args = dict(model=MODEL, messages=CHAT_ROWS[0]["messages"], max_tokens=24, temperature=0, logprobs=True, top_logprobs=3)
        whole = openai_client.chat.completions.create(**args)
        gathered = []
        for chunk in openai_client.chat.completions.create(stream=True, **args):
            if chunk.choices and chunk.choices[0].logprobs:
                gathered += chunk.choices[0].logprobs.content
        self.assertEqual(len(gathered), whole.usage.completion_tokens)
        self.assertEqual([c.model_dump() for c in gathered], [c.model_dump() for c in whole.choices[0].logprobs.content])

    def test_openai_completions(self):
        args = dict(model=MODEL, prompt=TEXT_ROWS[1]["prompt"], max_tokens=20, temperature=0, logprobs=2)
        whole = openai_client.completions.create(**args).choices[0].logprobs
        tokens, offsets, top = [], [], []
        for chunk in openai_client.completions.create(stream=True, **args):
            if chunk.choices and chunk.choices[0].logprobs:
                lp = chunk.choices[0].logprobs
                tokens += lp.tokens
                offsets += lp.text_offset
                top += lp.top_logprobs
        self.assertEqual((tokens, offsets, top), (whole.tokens, whole.text_offset, whole.top_logprobs))
        self.assertEqual(len(tokens), 20)

    def test_ollama_generate(self):
        args = dict(model=MODEL, prompt=TEXT_ROWS[2]["prompt"], raw=True, options={"temperature": 0, "num_predict": 20}, logprobs=True, top_logprobs=2)
        whole = ollama_client.generate(**args).logprobs
        gathered = [lp for part in ollama_client.generate(stream=True, **args) for lp in (part.logprobs or [])]
        self.assertEqual([g.model_dump() for g in gathered], [w.model_dump() for w in whole])
        self.assertEqual(len(gathered), 20)


class Distribution(unittest.TestCase):
    """The values are the model's own distribution, before the grammar,
    penalties and temperature shape the draw."""

    def first_position(self, **extra):
        out = openai_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=3, logprobs=True, top_logprobs=5, **extra)
        first = out.choices[0].logprobs.content[0]
        return first, [(t.token, round(t.logprob, 4)) for t in first.top_logprobs]

    def test_transforms_do_not_change_the_reported_distribution(self):
        _, plain = self.first_position(temperature=0)
        self.assertEqual(plain, sorted(plain, key=lambda t: -t[1]))
        self.assertLess(sum(math.exp(lp) for _, lp in plain), 1.0 + 1e-6)
        for extra in [
            dict(temperature=1.8, seed=3),
            dict(temperature=0, presence_penalty=2.0, frequency_penalty=2.0),
            dict(temperature=0, response_format={"type": "json_object"}),
        ]:
            drawn, top = self.first_position(**extra)
            self.assertEqual(top, plain, extra)
            # The drawn token's value is its raw one, wherever it ranks.
            listed = dict(plain)
            if drawn.token in listed:
                self.assertAlmostEqual(drawn.logprob, listed[drawn.token], delta=1e-4, msg=extra)
        # JSON must open with "{" (or white space): a token the model
        # itself finds unlikely here, so its raw value is far below the best.
        drawn, _ = self.first_position(temperature=0, response_format={"type": "json_object"})
        self.assertLess(drawn.logprob, plain[0][1])

    def test_every_choice_has_its_own(self):
        out = openai_client.chat.completions.create(
            model=MODEL, messages=CHAT_ROWS[0]["messages"], max_tokens=6, temperature=1.0, seed=5, n=3, logprobs=True)
        for c in out.choices:
            self.assertEqual("".join(t.token for t in c.logprobs.content), c.message.content)
            self.assertTrue(all(t.top_logprobs == [] and t.logprob <= 0 for t in c.logprobs.content))


class BadInput(unittest.TestCase):
    def test_out_of_range_or_contradictory_requests_are_refused(self):
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        for path, body, needle in [
            ("/v1/chat/completions", dict(chat, logprobs=True, top_logprobs=21), "top_logprobs must be between 0 and 20"),
            ("/v1/chat/completions", dict(chat, top_logprobs=2), "top_logprobs needs logprobs: true"),
            ("/v1/chat/completions", dict(chat, logprobs=3), "logprobs must be true or false"),
            ("/v1/completions", {"model": MODEL, "prompt": "hi", "logprobs": True}, "logprobs must be a whole number from 0 to 20"),
            ("/v1/completions", {"model": MODEL, "prompt": "hi", "logprobs": 21}, "logprobs must be a whole number from 0 to 20"),
            ("/v1/completions", {"model": MODEL, "prompt": "hi", "logprobs": 1, "top_logprobs": 1}, "top_logprobs is for chat completions"),
            ("/api/generate", {"model": MODEL, "prompt": "hi", "logprobs": True, "top_logprobs": 21}, "top_logprobs must be between 0 and 20"),
            ("/api/chat", dict(chat, logprobs="yes"), "logprobs must be true or false"),
        ]:
            status, answer = request("POST", path, body)
            self.assertEqual(status, 400, (path, body, answer))
            message = answer["error"]["message"] if path.startswith("/v1") else answer["error"]
            self.assertIn(needle, message, (path, body))


if __name__ == "__main__":
    unittest.main(verbosity=2)
