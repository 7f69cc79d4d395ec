"""An embedding model (all-minilm) next to a chat model (smollm2:135m)
through the official ollama and openai Python packages, unchanged, against
a running `caravan serve` (CARAVAN_URL; run by tests/server.rs), and by raw
HTTP for status codes. The vectors are checked against llama.cpp's own on
the same GGUF (tests/data/all-minilm-embeddings.json)."""

import json
import math
import os
import threading
import unittest

import ollama
import openai
import raw_http

URL = os.environ["CARAVAN_URL"]
EMBEDDER = "all-minilm"
CHAT = "smollm2:135m"
REFERENCE = json.load(open(os.path.join(os.path.dirname(__file__), "..", "data", "all-minilm-embeddings.json")))["rows"]

ollama_client = ollama.Client(host=URL)
openai_client = openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0)


def request(method, path, body=None):
    return raw_http.request(URL, method, path, body)


def cosine_distance(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return 1 - dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


# Far more than the model's 512 positions in WordPiece tokens.
LONG = "retrieval " * 700


class EmbeddingModel(unittest.TestCase):
    def test_ollama_embed_equals_llama_cpp(self):
        texts = [r["text"] for r in REFERENCE]
        r = ollama_client.embed(model=EMBEDDER, input=texts)
        self.assertEqual(len(r.embeddings), len(texts))
        for row, got in zip(REFERENCE, r.embeddings):
            self.assertEqual(len(got), 384)
            self.assertAlmostEqual(math.sqrt(sum(x * x for x in got)), 1.0, places=5)
            self.assertLess(cosine_distance(row["embedding"], got), 1e-4, row["text"])
        self.assertGreater(r.prompt_eval_count, len(texts) * 2)

    def test_openai_embeddings_equal_ollama_s(self):
        texts = [r["text"] for r in REFERENCE[:3]]
        mine = ollama_client.embed(model=EMBEDDER, input=texts).embeddings
        for encoding in ["float", openai.NOT_GIVEN]:
            # Not given, the official client asks for base64 and decodes it.
            r = openai_client.embeddings.create(model=EMBEDDER, input=texts, encoding_format=encoding)
            self.assertEqual([d.index for d in r.data], [0, 1, 2])
            for d, m in zip(r.data, mine):
                self.assertLess(max(abs(x - y) for x, y in zip(d.embedding, m)), 1e-6)
        self.assertEqual(r.model, EMBEDDER)
        self.assertGreater(r.usage.prompt_tokens, 6)

    def test_many_clients_at_once_get_what_each_gets_alone(self):
        texts = [r["text"] for r in REFERENCE]
        alone = {t: ollama_client.embed(model=EMBEDDER, input=t).embeddings[0] for t in texts}
        got, errors = {}, []

        def client(t):
            try:
                got[t] = ollama.Client(host=URL).embed(model=EMBEDDER, input=t).embeddings[0]
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=client, args=(t,)) for t in texts * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        for t in texts:
            # Each input attends only to itself: batched or not, the same bits.
            self.assertEqual(got[t], alone[t], t)

    def test_an_embedding_model_refuses_to_generate(self):
        with self.assertRaises(ollama.ResponseError) as e:
            ollama_client.generate(model=EMBEDDER, prompt="hello")
        self.assertEqual(e.exception.status_code, 400)
        self.assertIn("only embeds", e.exception.error)
        with self.assertRaises(ollama.ResponseError) as e:
            ollama_client.chat(model=EMBEDDER, messages=[{"role": "user", "content": "hello"}])
        self.assertEqual(e.exception.status_code, 400)
        self.assertIn("only embeds", e.exception.error)
        with self.assertRaises(openai.BadRequestError) as e:
            openai_client.chat.completions.create(model=EMBEDDER, messages=[{"role": "user", "content": "hello"}])
        self.assertIn("only embeds", e.exception.message)
        with self.assertRaises(openai.BadRequestError) as e:
            openai_client.completions.create(model=EMBEDDER, prompt="hello")
        self.assertIn("only embeds", e.exception.message)
        status, body = request("POST", "/api/batch", {"model": EMBEDDER, "requests": [{"prompt": "hi"}]})
        self.assertEqual(status, 400)
        self.assertIn("only embeds", body["error"])

    def test_a_long_input_is_truncated_or_refused_as_truncate_says(self):
        r = ollama_client.embed(model=EMBEDDER, input=LONG)
        self.assertEqual(r.prompt_eval_count, 512)
        cut = ollama_client.embed(model=EMBEDDER, input="retrieval " * 510).embeddings[0]
        # 510 words, [CLS] and [SEP]: exactly what truncation keeps.
        self.assertEqual(r.embeddings[0], cut)
        with self.assertRaises(ollama.ResponseError) as e:
            ollama_client.embed(model=EMBEDDER, input=LONG, truncate=False)
        self.assertEqual(e.exception.status_code, 400)
        self.assertIn("512", e.exception.error)
        with self.assertRaises(openai.BadRequestError) as e:
            openai_client.embeddings.create(model=EMBEDDER, input=LONG)
        self.assertIn("512", e.exception.message)

    def test_a_batch_of_embedding_items_answers_as_embed_does(self):
        texts = [r["text"] for r in REFERENCE]
        requests = [{"input": t} for t in texts[:4]] + [{"input": texts[4:], "truncate": True}]
        status, body = request("POST", "/api/batch", {"model": EMBEDDER, "requests": requests})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["items"], 5)
        self.assertEqual([r["index"] for r in body["responses"]], [0, 1, 2, 3, 4])
        direct = ollama_client.embed(model=EMBEDDER, input=texts).embeddings
        got = [e for r in body["responses"] for e in r["embeddings"]]
        # Whatever passes they shared, each input's own bits.
        self.assertEqual(got, direct)
        self.assertEqual(body["prompt_eval_count"], sum(r["prompt_eval_count"] for r in body["responses"]))
        status, text = request("POST", "/api/batch", {"model": EMBEDDER, "requests": requests, "stream": True})
        self.assertEqual(status, 200)
        lines = [json.loads(line) for line in text.splitlines()]
        self.assertEqual(sorted(line["index"] for line in lines[:-1]), [0, 1, 2, 3, 4])
        self.assertEqual([e for line in sorted(lines[:-1], key=lambda x: x["index"]) for e in line["embeddings"]], direct)
        self.assertEqual(lines[-1]["items"], 5)
        self.assertTrue(lines[-1]["done"])
        # A chat model's embeddings come the same way.
        status, body = request("POST", "/api/batch", {"model": CHAT, "requests": [{"input": "The cat sat."}]})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["responses"][0]["embeddings"], ollama_client.embed(model=CHAT, input="The cat sat.").embeddings)

    def test_a_bad_embedding_batch_is_a_400_naming_why(self):
        cases = [
            ({"requests": [{"input": "a"}, {"prompt": "b"}]}, "all embeddings"),
            ({"requests": [{"input": "a", "options": {"temperature": 0}}]}, "options is not supported in an embedding request"),
            ({"requests": [{"input": "a"}], "format": "json"}, "format does not apply"),
            ({"requests": [{"input": []}]}, "requests[0]: input must not be empty"),
            ({"requests": [{"input": 5}]}, "requests[0]: input must be a string"),
            ({"requests": [{"input": LONG, "truncate": False}]}, "requests[0]: the input is"),
        ]
        for extra, why in cases:
            with self.subTest(why=why):
                status, body = request("POST", "/api/batch", {"model": EMBEDDER, **extra})
                self.assertEqual(status, 400, body)
                self.assertIn(why, body["error"])

    def test_show_and_list_report_an_embedding_model(self):
        shown = ollama_client.show(EMBEDDER)
        self.assertEqual(shown.details.family, "bert")
        self.assertEqual(shown.details.format, "gguf")
        self.assertIn("embedding", shown.capabilities)
        self.assertNotIn("completion", shown.capabilities)
        self.assertEqual(shown.modelinfo["bert.embedding_length"], 384)
        names = [m.model for m in ollama_client.list().models]
        self.assertIn(EMBEDDER, names)

    def test_the_chat_model_still_embeds_beside_it(self):
        r = ollama_client.embed(model=CHAT, input=["The cat sat.", "The cat sat."])
        self.assertEqual(len(r.embeddings[0]), 576)
        self.assertEqual(r.embeddings[0], r.embeddings[1])
        text = ollama_client.generate(model=CHAT, prompt="The capital of France is", options={"num_predict": 4, "temperature": 0})
        self.assertEqual(text.eval_count, 4)


if __name__ == "__main__":
    unittest.main(verbosity=2)
