"""Batch jobs through the official openai Python package, unchanged:
files.create, batches.create/retrieve/list/cancel and files.content
against `caravan serve` processes this script starts itself (servers.py;
run by tests/server.rs), so that it can kill one with SIGKILL mid-job and
start it again on the same data. Answers are checked against llama.cpp's
own greedy output of the same file (tests/data/smollm2-greedy.jsonl), with
the servers in ggml's arithmetic."""

import io
import json
import os
import time
import unittest

import openai
import raw_http
from servers import ROOT, Server

MODEL = "smollm2:135m"
ENDED = ("completed", "failed", "cancelled", "expired")

with open(os.path.join(os.path.dirname(__file__), "..", "data", "smollm2-greedy.jsonl")) as f:
    ROWS = [json.loads(line) for line in f]


def jsonl(lines):
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


def request_line(custom_id, url, body):
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def start(client, lines, endpoint="/v1/completions", **extra):
    f = client.files.create(file=("input.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    return client.batches.create(input_file_id=f.id, endpoint=endpoint, completion_window="24h", **extra)


def wait(client, batch_id, until=lambda b: b.status in ENDED, timeout=240):
    deadline = time.time() + timeout
    while True:
        b = client.batches.retrieve(batch_id)
        if until(b):
            return b
        assert time.time() < deadline, f"batch still {b.status}: {b.request_counts}"
        time.sleep(0.05)


def lines_of(client, file_id):
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def text_rows():
    return [r for r in ROWS if r["kind"] == "text"]


def completion_lines(rows):
    return [request_line(f"row-{r['id']}", "/v1/completions",
                         {"model": MODEL, "prompt": r["prompt"], "max_tokens": len(r["completion_tokens"]), "temperature": 0}) for r in rows]


class Jobs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(os.path.join(ROOT, "jobs"), "--max-seqs", "8", "--max-file-size", "200KB")
        cls.client = cls.server.client

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_a_completions_job_answers_as_llama_cpp_and_lists_its_files(self):
        rows = text_rows()
        lines = completion_lines(rows)
        lines.insert(3, request_line("bad-temperature", "/v1/completions", {"model": MODEL, "prompt": "x", "temperature": "hot"}))
        lines.insert(7, "this line is not JSON")
        b = start(self.client, lines, metadata={"project": "atlas"})
        self.assertEqual((b.status, b.metadata, b.output_file_id), ("validating", {"project": "atlas"}, None))
        b = wait(self.client, b.id)
        self.assertEqual(b.status, "completed")
        self.assertEqual((b.request_counts.total, b.request_counts.completed, b.request_counts.failed), (len(rows) + 2, len(rows), 2))
        self.assertEqual(b.model, MODEL)
        self.assertTrue(b.created_at <= b.in_progress_at <= b.finalizing_at <= b.completed_at)
        answers = lines_of(self.client, b.output_file_id)
        by_id = {a["custom_id"]: a for a in answers}
        self.assertEqual(len(by_id), len(answers))
        self.assertEqual(sorted(by_id), sorted(f"row-{r['id']}" for r in rows))
        for r in rows:
            a = by_id[f"row-{r['id']}"]
            self.assertEqual(a["response"]["status_code"], 200)
            self.assertIsNone(a["error"])
            body = a["response"]["body"]
            self.assertEqual(body["choices"][0]["text"], r["completion"], r["id"])
            self.assertEqual(body["usage"]["completion_tokens"], len(r["completion_tokens"]), r["id"])
            self.assertEqual(body["choices"][0]["finish_reason"], "length" if r["stop_type"] == "limit" else "stop", r["id"])
        errors = sorted(lines_of(self.client, b.error_file_id), key=lambda e: e["custom_id"] or "")
        self.assertEqual([e["custom_id"] for e in errors], [None, "bad-temperature"])
        self.assertEqual([e["response"]["status_code"] for e in errors], [400, 400])
        self.assertIn("not JSON", errors[0]["response"]["body"]["error"]["message"])
        self.assertIn("temperature", errors[1]["response"]["body"]["error"]["message"])
        out = self.client.files.retrieve(b.output_file_id)
        self.assertEqual((out.purpose, out.bytes), ("batch_output", len(self.client.files.content(b.output_file_id).content)))
        listed = [f.id for f in self.client.files.list(purpose="batch_output")]
        self.assertIn(b.output_file_id, listed)
        self.assertIn(b.error_file_id, listed)
        self.assertNotIn(b.input_file_id, listed)

    def test_a_chat_job_answers_as_llama_cpp(self):
        rows = [r for r in ROWS if r["kind"] == "chat"]
        lines = [request_line(f"chat-{r['id']}", "/v1/chat/completions",
                              {"messages": r["messages"], "max_tokens": len(r["completion_tokens"]), "temperature": 0}) for r in rows]
        b = wait(self.client, start(self.client, lines, endpoint="/v1/chat/completions").id)
        self.assertEqual((b.status, b.request_counts.completed, b.error_file_id), ("completed", len(rows), None))
        by_id = {a["custom_id"]: a["response"]["body"] for a in lines_of(self.client, b.output_file_id)}
        for r in rows:
            self.assertEqual(by_id[f"chat-{r['id']}"]["choices"][0]["message"]["content"], r["completion"], r["id"])

    def test_an_embeddings_job_answers_as_the_embeddings_route(self):
        inputs = ["The sea is deep.", ["one", "two"], "Paris"]
        lines = [request_line(f"e{i}", "/v1/embeddings", {"model": MODEL, "input": x}) for i, x in enumerate(inputs)]
        b = wait(self.client, start(self.client, lines, endpoint="/v1/embeddings").id)
        self.assertEqual((b.status, b.request_counts.completed), ("completed", 3))
        by_id = {a["custom_id"]: a["response"]["body"] for a in lines_of(self.client, b.output_file_id)}
        for i, x in enumerate(inputs):
            direct = self.client.embeddings.create(model=MODEL, input=x, encoding_format="float")
            got = by_id[f"e{i}"]["data"]
            self.assertEqual(len(got), len(direct.data))
            for g, d in zip(got, direct.data):
                self.assertEqual(len(g["embedding"]), len(d.embedding))
                self.assertLess(max(abs(a - b) for a, b in zip(g["embedding"], d.embedding)), 1e-5)

    def test_inputs_that_fail_validation_say_why(self):
        good = request_line("a", "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 1})
        no_id = {k: v for k, v in good.items() if k != "custom_id"}
        cases = [
            ([], "invalid_file", None, "holds no requests"),
            (["hello", "world"], "invalid_file", None, "not JSONL"),
            ([good, no_id], "missing_custom_id", 2, "custom_id"),
            ([good, good], "duplicate_custom_id", None, '"a"'),
            ([good, {**good, "custom_id": "b", "url": "/v1/chat/completions"}], "mismatched_endpoint", 2, "/v1/chat/completions"),
            ([{**good, "body": {"model": "no-such-model", "prompt": "hi"}}], "model_not_found", None, "no-such-model"),
        ]
        for lines, code, line, needle in cases:
            b = wait(self.client, start(self.client, lines).id)
            self.assertEqual(b.status, "failed", code)
            self.assertIsNotNone(b.failed_at)
            self.assertEqual((b.output_file_id, b.error_file_id, b.request_counts.completed), (None, None, 0))
            error = b.errors.data[0]
            self.assertEqual((error.code, error.line), (code, line))
            self.assertIn(needle, error.message, code)

    def test_bad_requests_get_openai_s_errors(self):
        c = self.client
        for call in [lambda: c.batches.retrieve("batch_nope"), lambda: c.batches.cancel("batch_nope"),
                     lambda: c.files.retrieve("file-nope"), lambda: c.files.content("file-nope"), lambda: c.files.delete("file-nope"),
                     lambda: c.batches.create(input_file_id="file-nope", endpoint="/v1/completions", completion_window="24h")]:
            with self.assertRaises(openai.NotFoundError) as e:
                call()
            self.assertEqual(e.exception.body["code"], "not_found")
        f = c.files.create(file=("in.jsonl", io.BytesIO(jsonl([{"custom_id": "a"}]))), purpose="batch")
        for kwargs, needle in [
            ({"endpoint": "/v1/responses", "completion_window": "24h"}, "endpoint must be one of"),
            ({"endpoint": "/v1/completions", "completion_window": "1h"}, "completion_window"),
            ({"endpoint": "/v1/completions", "completion_window": "24h", "metadata": {"k": 5}}, "metadata"),
            ({"endpoint": "/v1/completions", "completion_window": "24h", "extra_body": {"priority": 1}}, "priority is not supported"),
        ]:
            with self.assertRaises(openai.BadRequestError) as e:
                c.batches.create(input_file_id=f.id, **kwargs)
            self.assertIn(needle, e.exception.message)
        with self.assertRaises(openai.BadRequestError) as e:
            c.files.create(file=("t.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune")
        self.assertIn('purpose must be "batch"', e.exception.message)
        with self.assertRaises(openai.APIStatusError) as e:
            c.files.create(file=("big.jsonl", io.BytesIO(b"x" * 300_000)), purpose="batch")
        self.assertEqual(e.exception.status_code, 413)
        self.assertIn("--max-file-size", e.exception.message)
        status, body = raw_http.request(self.server.url, "POST", "/v1/files", raw=b"{}")
        self.assertEqual((status, body["error"]["type"]), (400, "invalid_request_error"))
        self.assertIn("multipart/form-data", body["error"]["message"])
        done = wait(c, start(c, [{"custom_id": "x", "method": "POST", "url": "/v1/completions", "body": {"prompt": "a", "max_tokens": 1}}]).id)
        with self.assertRaises(openai.ConflictError) as e:
            c.batches.cancel(done.id)
        self.assertIn("is completed", e.exception.message)
        with self.assertRaises(openai.BadRequestError) as e:
            c.batches.create(input_file_id=done.output_file_id, endpoint="/v1/completions", completion_window="24h")
        self.assertIn("batch_output", e.exception.message)
        self.assertEqual(c.files.delete(done.output_file_id).deleted, True)
        with self.assertRaises(openai.NotFoundError):
            c.files.content(done.output_file_id)
        self.assertEqual(c.batches.retrieve(done.id).request_counts.completed, 1)

    def test_batches_and_files_are_listed_newest_first_in_pages(self):
        ids = [start(self.client, [request_line("p", "/v1/completions", {"prompt": "a", "max_tokens": 1})]).id for _ in range(3)]
        for i in ids:
            wait(self.client, i)
        page = self.client.batches.list(limit=2)
        self.assertEqual([b.id for b in page.data], ids[::-1][:2])
        self.assertTrue(page.has_more)
        following = page.get_next_page()
        self.assertEqual(following.data[0].id, ids[0])
        every = [b.id for b in self.client.batches.list(limit=2)]
        self.assertEqual(every[:3], ids[::-1])
        self.assertEqual(len(every), len(set(every)))
        files = self.client.files.list(purpose="batch", order="asc", limit=1)
        self.assertEqual(len(files.data), 1)
        with self.assertRaises(openai.BadRequestError):
            self.client.batches.list(limit=0)


class Durability(unittest.TestCase):
    def test_a_cancelled_job_keeps_the_answers_written(self):
        server = Server(os.path.join(ROOT, "cancel"), "--max-seqs", "2")
        try:
            c = server.client
            lines = [request_line(f"c{i}", "/v1/completions", {"prompt": f"Story {i}:", "max_tokens": 48, "temperature": 0}) for i in range(40)]
            b = start(c, lines)
            b = wait(c, b.id, until=lambda b: b.request_counts.completed >= 2)
            with self.assertRaises(openai.ConflictError) as e:
                c.files.delete(b.input_file_id)
            self.assertIn("has not ended", e.exception.message)
            self.assertIn(c.batches.cancel(b.id).status, ("cancelling", "cancelled"))
            b = wait(c, b.id)
            self.assertEqual(b.status, "cancelled")
            self.assertIsNotNone(b.cancelling_at)
            self.assertIsNotNone(b.cancelled_at)
            self.assertLess(b.request_counts.completed, 40)
            answers = lines_of(c, b.output_file_id)
            self.assertEqual(len(answers), b.request_counts.completed)
            self.assertEqual(len({a["custom_id"] for a in answers}), len(answers))
            self.assertTrue(all(a["response"]["status_code"] == 200 for a in answers))
            self.assertEqual(c.batches.cancel(b.id).status, "cancelled")
            self.assertTrue(c.files.delete(b.input_file_id).deleted)
        finally:
            server.stop()

    def test_a_job_killed_mid_way_resumes_and_answers_each_item_once(self):
        data = os.path.join(ROOT, "killed")
        rows = text_rows()
        lines = completion_lines(rows + rows)
        for i, line in enumerate(lines):
            line["custom_id"] = f"{line['custom_id']}-{i}"
        server = Server(data, "--max-seqs", "4")
        b = start(server.client, lines)
        b = wait(server.client, b.id, until=lambda b: b.request_counts.completed >= 6)
        server.kill()
        # What a kill between writing an answer and committing it leaves:
        # a line past the committed length (here a copy of the first, and
        # a line cut short). The resumed run must cut them off.
        files = os.path.join(data, "files")
        writing = [p for p in os.listdir(files) if p != b.input_file_id and os.path.getsize(os.path.join(files, p)) > 0]
        self.assertEqual(len(writing), 1)
        with open(os.path.join(files, writing[0]), "r+") as f:
            first = f.readline()
            f.seek(0, os.SEEK_END)
            f.write(first + first[:20])
        server = Server(data, "--max-seqs", "4")
        try:
            b = wait(server.client, b.id)
            self.assertEqual(b.status, "completed")
            self.assertEqual((b.request_counts.total, b.request_counts.completed, b.request_counts.failed), (len(lines), len(lines), 0))
            answers = lines_of(server.client, b.output_file_id)
            ids = [a["custom_id"] for a in answers]
            self.assertEqual(sorted(ids), sorted(line["custom_id"] for line in lines))
            want = {line["custom_id"]: row["completion"] for line, row in zip(lines, rows + rows)}
            for a in answers:
                self.assertEqual(a["response"]["body"]["choices"][0]["text"], want[a["custom_id"]], a["custom_id"])
        finally:
            server.stop()
        with open(os.path.join(ROOT, "servers.log")) as f:
            self.assertIn(f"batch {b.id}: resuming", f.read())

    def test_a_job_past_its_window_expires_with_what_it_answered(self):
        env = {"CARAVAN_TEST_FAULTS": "1", "CARAVAN_TEST_BATCH_WINDOW": "1"}
        server = Server(os.path.join(ROOT, "expired"), "--max-seqs", "1", env=env)
        try:
            c = server.client
            lines = [request_line(f"x{i}", "/v1/completions", {"prompt": f"Tale {i}:", "max_tokens": 64, "temperature": 0}) for i in range(30)]
            b = wait(c, start(c, lines).id)
            self.assertEqual(b.status, "expired")
            self.assertIsNotNone(b.expired_at)
            counts = b.request_counts
            self.assertEqual(counts.completed + counts.failed, 30)
            self.assertGreater(counts.failed, 0)
            errors = lines_of(c, b.error_file_id)
            self.assertEqual(len(errors), counts.failed)
            self.assertTrue(all(e["response"] is None and e["error"]["code"] == "batch_expired" for e in errors))
            answered = lines_of(c, b.output_file_id) if b.output_file_id else []
            self.assertEqual(len(answered), counts.completed)
            self.assertEqual(sorted(a["custom_id"] for a in answered + errors), sorted(f"x{i}" for i in range(30)))
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
