"""Structured output through the official ollama and openai Python
packages, unchanged, against a running `caravan serve` (CARAVAN_URL, the
default model; run by tests/server.rs), and by raw HTTP for status codes.
Every output under a schema is validated with the jsonschema package."""

import http.client
import json
import os
import re
import unittest
import urllib.parse
from typing import List, Literal

import jsonschema
import ollama
import openai
from pydantic import BaseModel, Field

URL = os.environ["CARAVAN_URL"]
MODEL = "smollm2:135m"

ollama_client = ollama.Client(host=URL)
openai_client = openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0)


def request(method, path, body):
    u = urllib.parse.urlparse(URL)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    conn.request(method, path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    text = r.read().decode()
    conn.close()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text


class Suggestion(BaseModel):
    title: str
    action: Literal["open", "archive", "reply", "delete"]
    priority: int = Field(ge=1, le=5)


class Suggestions(BaseModel):
    suggestions: List[Suggestion] = Field(min_length=1, max_length=3)


# Schemas over the features people use: nesting, arrays with bounds,
# enums, integer ranges, required fields, string patterns.
SCHEMAS = {
    "nested": {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 20}, "address": {
                    "type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}},
                "required": ["name", "address"],
            }
        },
        "required": ["user"],
    },
    "array": {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 2, "maxItems": 4}},
        "required": ["tags"],
    },
    "enum": {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]}, "size": {"type": "string", "enum": ["S", "M", "L"]}},
        "required": ["color", "size"],
    },
    "integer": {
        "type": "object",
        "properties": {"age": {"type": "integer", "minimum": 18, "maximum": 99}, "score": {"type": "number"}},
        "required": ["age", "score"],
    },
    "pattern": {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}, "ok": {"type": "boolean"}},
        "required": ["code", "ok"],
        "additionalProperties": False,
    },
}


class Guarantee(unittest.TestCase):
    def test_fifty_samples_per_schema_at_temperature_one_all_validate(self):
        # One batch request per schema: 50 items, each its own sequence
        # and matcher, sampled at temperature 1.
        for name, schema in SCHEMAS.items():
            items = [{"prompt": f"Answer in JSON ({name}), attempt {i}.", "format": schema} for i in range(50)]
            status, body = request("POST", "/api/batch", {
                "model": MODEL, "requests": items, "options": {"temperature": 1, "num_predict": 120, "seed": 5}})
            self.assertEqual(status, 200, body)
            valid = 0
            for r in body["responses"]:
                self.assertEqual(r["done_reason"], "stop", (name, r))
                jsonschema.validate(json.loads(r["response"]), schema)
                valid += 1
            self.assertEqual(valid, 50, name)

    def test_max_tokens_before_the_grammar_completes_ends_with_length(self):
        schema = {"type": "object", "properties": {"story": {"type": "string", "minLength": 400}}, "required": ["story"]}
        r = openai_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "A story"}], max_tokens=10,
            response_format={"type": "json_schema", "json_schema": {"name": "story", "schema": schema}})
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.completion_tokens, 10)
        self.assertTrue(r.choices[0].message.content.startswith('{"story": "'), r.choices[0].message.content)


class OfficialClients(unittest.TestCase):
    def test_ollama_chat_with_a_pydantic_schema(self):
        r = ollama_client.chat(model=MODEL, messages=[{"role": "user", "content": "Suggest actions for my inbox."}],
                               format=Suggestions.model_json_schema(), options={"temperature": 0, "num_predict": 200})
        parsed = Suggestions.model_validate_json(r.message.content)
        self.assertTrue(1 <= len(parsed.suggestions) <= 3)

    def test_ollama_generate_json_and_its_stream_agree(self):
        kw = dict(model=MODEL, prompt="Describe a cat as JSON.", format="json", options={"temperature": 0, "num_predict": 60})
        whole = ollama_client.generate(**kw)
        self.assertIsInstance(json.loads(whole.response), dict)
        streamed = "".join(part.response for part in ollama_client.generate(stream=True, **kw))
        self.assertEqual(streamed, whole.response)

    def test_openai_parse_returns_the_pydantic_object(self):
        r = openai_client.chat.completions.parse(
            model=MODEL, messages=[{"role": "user", "content": "Suggest actions for my inbox."}],
            response_format=Suggestions, temperature=0, max_tokens=200)
        parsed = r.choices[0].message.parsed
        self.assertIsInstance(parsed, Suggestions)
        self.assertEqual(Suggestions.model_validate_json(r.choices[0].message.content), parsed)

    def test_openai_json_object_with_n_choices_each_valid(self):
        r = openai_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "A JSON object about a dog."}], n=4, temperature=1, seed=3,
            max_tokens=80, response_format={"type": "json_object"})
        self.assertEqual(len(r.choices), 4)
        for c in r.choices:
            if c.finish_reason == "stop":
                self.assertIsInstance(json.loads(c.message.content), dict)

    def test_completions_take_response_format_and_regex_and_lark(self):
        r = openai_client.completions.create(model=MODEL, prompt="The answer is", max_tokens=8, temperature=1,
                                             extra_body={"response_format": {"type": "regex", "regex": "(yes|no)"}})
        self.assertIn(r.choices[0].text, ["yes", "no"])
        self.assertEqual(r.choices[0].finish_reason, "stop")
        lark = 'start: "Total: " NUMBER " apples"\nNUMBER: /[0-9]{1,3}/'
        r = openai_client.completions.create(model=MODEL, prompt="Count:", max_tokens=12, temperature=1,
                                             extra_body={"response_format": {"type": "lark", "lark": lark}})
        self.assertRegex(r.choices[0].text, r"^Total: [0-9]{1,3} apples$")

    def test_stop_strings_still_cut_a_constrained_answer(self):
        r = ollama_client.generate(model=MODEL, prompt="A person as JSON.", options={"temperature": 0, "num_predict": 60, "stop": [","]},
                                   format={"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                                           "required": ["a", "b"]})
        self.assertTrue(r.response.startswith('{"a": "'), r.response)
        self.assertNotIn(",", r.response)
        self.assertEqual(r.done_reason, "stop")

    def test_batch_items_each_with_their_own_schema(self):
        items = [
            {"prompt": "A number", "format": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
            {"prompt": "A word", "format": {"type": "object", "properties": {"w": {"enum": ["up", "down"]}}, "required": ["w"]}},
            {"prompt": "Free text"},
            {"messages": [{"role": "user", "content": "Chat as JSON"}], "format": "json"},
        ]
        status, body = request("POST", "/api/batch", {"model": MODEL, "requests": items, "options": {"temperature": 0, "num_predict": 40}})
        self.assertEqual(status, 200, body)
        self.assertTrue(body["admitted_together"])
        r = body["responses"]
        self.assertIsInstance(json.loads(r[0]["response"])["n"], int)
        self.assertIn(json.loads(r[1]["response"])["w"], ["up", "down"])
        self.assertIsInstance(json.loads(r[3]["message"]["content"]), dict)


class BadInput(unittest.TestCase):
    def test_a_schema_that_does_not_compile_is_a_400_naming_the_problem(self):
        status, body = request("POST", "/api/generate", {"model": MODEL, "prompt": "x", "stream": False, "format": {"type": "strin"}})
        self.assertEqual(status, 400)
        self.assertIn("strin", body["error"])
        status, body = request("POST", "/v1/chat/completions", {
            "model": MODEL, "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
                "a": {"type": "string", "pattern": "(unclosed"}}}}}})
        self.assertEqual(status, 400)
        self.assertEqual(body["error"]["type"], "invalid_request_error")
        self.assertIn("grammar", body["error"]["message"])

    def test_unknown_formats_are_400(self):
        status, body = request("POST", "/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "format": "yaml"})
        self.assertEqual(status, 400)
        self.assertIn("format", body["error"])
        status, body = request("POST", "/v1/chat/completions", {
            "model": MODEL, "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}})
        self.assertEqual(status, 400)
        self.assertIn("xml", body["error"]["message"])
        status, body = request("POST", "/api/batch", {"model": MODEL, "requests": [{"prompt": "x", "format": 7}]})
        self.assertEqual(status, 400)
        self.assertTrue(body["error"].startswith("requests[0]: format"), body)

    def test_a_bad_grammar_disturbs_nothing_else(self):
        r = ollama_client.generate(model=MODEL, prompt="Hello", options={"temperature": 0, "num_predict": 5})
        self.assertEqual(r.eval_count, 5)
        self.assertTrue(re.search(r"\S", r.response))


if __name__ == "__main__":
    unittest.main(verbosity=2)
