"""Models managed over HTTP with the official ollama package, unchanged,
against a running `caravan serve` (CARAVAN_URL) whose store holds the
default model alone; CARAVAN_MODEL_FILE is a copy of its GGUF to upload;
CARAVAN_OLLAMA_MODELS is the (empty) folder the server serves as an Ollama
store, which the tests lay out as Ollama does. Run by tests/server.rs."""

import hashlib
import json
import os
import time
import unittest

import ollama
import raw_http

URL = os.environ["CARAVAN_URL"]
MODEL_FILE = os.environ["CARAVAN_MODEL_FILE"]
OLLAMA = os.environ["CARAVAN_OLLAMA_MODELS"]
MODEL = "smollm2:135m"
client = ollama.Client(host=URL)


def request(method, path, body=None, raw=None):
    return raw_http.request(URL, method, path, body, raw)


def names():
    return sorted(m.model for m in client.list().models)


def answer(model):
    return client.generate(model=model, prompt="The capital of France is", raw=True, options={"temperature": 0, "num_predict": 6}).response


class Manage(unittest.TestCase):
    def test_1_upload_create_copy_delete(self):
        digest = client.create_blob(MODEL_FILE)
        with open(MODEL_FILE, "rb") as f:
            self.assertEqual(digest, "sha256:" + hashlib.sha256(f.read()).hexdigest())
        self.assertEqual(request("HEAD", "/api/blobs/" + digest)[0], 200)
        statuses = [p.status for p in client.create(model="uploaded", files={"model.gguf": digest}, stream=True)]
        self.assertEqual(statuses[-1], "success")
        client.create(model="derived:v1", from_=MODEL)
        client.copy(MODEL, "copied:7")
        self.assertEqual(names(), ["copied:7", "derived:v1", MODEL, "uploaded:latest"])
        reference = answer(MODEL)
        for name in ["uploaded", "derived:v1", "copied:7"]:
            self.assertEqual(answer(name), reference, name)
        # A system prompt and options of its own, as a Modelfile gives them.
        client.create(model="tuned", from_="uploaded", system="Answer in French.", parameters={"num_predict": 3, "temperature": 0})
        tuned = client.generate(model="tuned", prompt="Hi")
        alike = client.generate(model=MODEL, prompt="Hi", system="Answer in French.", options={"num_predict": 3, "temperature": 0})
        self.assertEqual((tuned.response, tuned.eval_count), (alike.response, 3))
        client.delete("tuned")
        client.delete("copied:7")
        client.delete("uploaded")
        self.assertEqual(names(), ["derived:v1", MODEL])
        # The blob is shared: the others still run.
        self.assertEqual(answer("derived:v1"), reference)
        with self.assertRaises(ollama.ResponseError) as e:
            client.delete("copied:7")
        self.assertEqual(e.exception.status_code, 404)

    def test_2_bad_requests_install_nothing(self):
        before = names()
        zeros = "sha256:" + "0" * 64
        status, body = request("POST", "/api/blobs/" + zeros, raw=b"not the bytes that hash so")
        self.assertEqual(status, 400)
        self.assertIn("SHA-256", body["error"])
        self.assertEqual(request("HEAD", "/api/blobs/" + zeros)[0], 404)
        text = b"a text file, not a GGUF"
        digest = "sha256:" + hashlib.sha256(text).hexdigest()
        self.assertEqual(request("POST", "/api/blobs/" + digest, raw=text)[0], 201)
        for body, status, needle in [
            ({"model": "bad", "files": {"model.gguf": digest}}, 400, "GGUF"),
            ({"model": "bad", "files": {"model.gguf": zeros}}, 400, "upload it"),
            ({"model": "bad", "from": "nope:1"}, 404, "nope"),
            ({"model": "bad", "from": MODEL, "template": "{{ .Prompt }}"}, 400, "template"),
            ({"model": "bad", "from": MODEL, "quantize": "q4_K_M"}, 400, "quantize"),
            ({"model": "bad", "from": MODEL, "parameters": {"temperature": "hot"}}, 400, "parameters: temperature"),
            ({"model": "bad", "from": MODEL, "parameters": ["temperature 0"]}, 400, "parameters must be an object"),
            ({"model": "bad"}, 400, "from or files"),
        ]:
            got, answer_ = request("POST", "/api/create", body)
            self.assertEqual(got, status, (body, answer_))
            self.assertIn(needle, answer_["error"], body)
        with self.assertRaises(ollama.ResponseError) as e:
            client.copy(MODEL, "derived:v1")
        self.assertEqual(e.exception.status_code, 400)
        self.assertIn("exists", str(e.exception))
        with self.assertRaises(ollama.ResponseError) as e:
            client.push(MODEL)
        self.assertEqual(e.exception.status_code, 400)
        with self.assertRaises(ollama.ResponseError) as e:
            client.pull("no-such-model:1b")
        self.assertEqual(e.exception.status_code, 404)
        self.assertEqual(names(), before)

    def test_3_a_model_deleted_in_use_finishes_and_pulls_back(self):
        stream = client.generate(model=MODEL, prompt="Hi", options={"num_predict": 300}, stream=True)
        next(stream)
        client.delete(MODEL)
        self.assertNotIn(MODEL, names())
        parts = list(stream)
        self.assertTrue(parts[-1].done)
        with self.assertRaises(ollama.ResponseError) as e:
            client.generate(model=MODEL, prompt="Hi")
        self.assertEqual(e.exception.status_code, 404)
        # A real pull: the catalog's package, its SHA-256 checked.
        progress = list(client.pull(MODEL, stream=True))
        self.assertEqual(progress[0].status, "pulling manifest")
        self.assertEqual(progress[-1].status, "success")
        downloaded = [p for p in progress if p.digest]
        self.assertEqual(downloaded[0].digest, "sha256:b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
        self.assertEqual(downloaded[0].completed, downloaded[0].total)
        self.assertIn(MODEL, names())
        self.assertEqual(client.pull(MODEL, stream=False).status, "success")
        self.assertTrue(answer(MODEL))


SYSTEM = "You answer in one short sentence."
PARAMS = {"temperature": 0, "num_predict": 8, "stop": ["\n\n"]}


def blob(data=None, link=None):
    """Writes a blob as Ollama stores it (blobs/sha256-<hex>); its digest."""
    if link:
        with open(link, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    else:
        digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(OLLAMA, "blobs", "sha256-" + digest)
    if not os.path.exists(path):
        if link:
            os.link(link, path)
        else:
            with open(path, "wb") as f:
                f.write(data)
    return "sha256:" + digest


def manifest(path, layers):
    """An OCI image manifest as Ollama writes one, at manifests/<path>."""
    config = blob(json.dumps({"model_format": "gguf", "model_family": "llama"}).encode())
    body = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config, "size": 1},
            "layers": [{"mediaType": kind, "digest": digest, "size": 1} for kind, digest in layers]}
    full = os.path.join(OLLAMA, "manifests", *path.split("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        json.dump(body, f)


def snapshot():
    """Every file of the Ollama store with its size and time: to show it unchanged."""
    out = {}
    for root, _, files in os.walk(OLLAMA):
        for name in files:
            st = os.stat(os.path.join(root, name))
            out[os.path.join(root, name)] = (st.st_size, st.st_mtime_ns)
    return out


class OllamaStore(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        os.makedirs(os.path.join(OLLAMA, "blobs"), exist_ok=True)
        model = blob(link=MODEL_FILE)
        system = blob(SYSTEM.encode())
        params = blob(json.dumps(PARAMS).encode())
        manifest("registry.ollama.ai/library/tiny/v1", [
            ("application/vnd.ollama.image.model", model), ("application/vnd.ollama.image.system", system),
            ("application/vnd.ollama.image.params", params)])
        manifest("registry.ollama.ai/someone/other/latest", [("application/vnd.ollama.image.model", model)])
        cls.before = snapshot()

    def test_models_are_listed_shown_and_served_with_their_modelfile_defaults(self):
        self.assertTrue({"tiny:v1", "someone/other:latest"} <= set(names()))
        self.assertTrue({"tiny:v1", "someone/other:latest"} <= {m["id"] for m in request("GET", "/v1/models")[1]["data"]})
        shown = client.show("tiny:v1")
        self.assertEqual(request("POST", "/api/show", {"model": "tiny:v1"})[1]["system"], SYSTEM)
        self.assertEqual(shown.parameters, 'temperature 0\nnum_predict 8\nstop "\\n\\n"')
        self.assertIn('PARAMETER num_predict 8\nPARAMETER stop "\\n\\n"\nSYSTEM """' + SYSTEM + '"""', shown.modelfile)
        prompt = "What is the capital of France?"
        mine = client.generate(model="tiny:v1", prompt=prompt)
        theirs = client.generate(model=MODEL, prompt=prompt, system=SYSTEM, options=PARAMS)
        self.assertEqual((mine.response, mine.eval_count), (theirs.response, theirs.eval_count))
        chat = client.chat(model="tiny:v1", messages=[{"role": "user", "content": prompt}])
        self.assertEqual(chat.message.content, client.chat(model=MODEL, messages=[
            {"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}], options=PARAMS).message.content)
        # A request's own fields win over the Modelfile's.
        longer = client.generate(model="tiny:v1", prompt=prompt, options={"num_predict": 2, "stop": []})
        self.assertEqual(longer.eval_count, 2)
        self.assertTrue(client.generate(model="someone/other", prompt=prompt, options={"num_predict": 2}).response)

    def test_the_ollama_store_is_never_modified(self):
        with self.assertRaises(ollama.ResponseError) as e:
            client.delete("tiny:v1")
        self.assertEqual(e.exception.status_code, 400)
        self.assertIn("Ollama store", str(e.exception))
        client.create(model="mine:2", from_="tiny:v1", parameters={"num_predict": 4})
        self.assertEqual(request("POST", "/api/show", {"model": "mine:2"})[1]["system"], SYSTEM)
        self.assertLessEqual(client.generate(model="mine:2", prompt="Hi").eval_count, 4)
        client.delete("mine:2")
        client.copy("tiny:v1", "mine:1")
        self.assertEqual(request("POST", "/api/show", {"model": "mine:1"})[1]["system"], SYSTEM)
        client.delete("mine:1")
        self.assertNotIn("mine:1", names())
        self.assertIn("tiny:v1", names())
        self.assertEqual(snapshot(), self.before)


if __name__ == "__main__":
    unittest.main(verbosity=2)
