"""Structured output through the official ollama and openai Python
packages, unchanged, against a running `caravan serve` (CARAVAN_URL, the
default model; run by tests/server.rs), and by raw HTTP for status codes.
Every output under a schema is validated with the jsonschema package."""

import json
import os
import re
import unittest
from typing import List, Literal

import jsonschema
import ollama
import openai
import raw_http
from pydantic import BaseModel, Field

URL = os.environ["CARAVAN_URL"]
MODEL = "smollm2:135m"

ollama_client = ollama.Client(host=URL)
openai_client = openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0)


def request(method, path, body=None, raw=None):
    return raw_http.request(URL, method, path, body, raw)


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
        # Each choice its own matcher: complete ones parse, cut ones are
        # the start of an object.
        self.assertIn("stop", [c.finish_reason for c in r.choices])
        for c in r.choices:
            if c.finish_reason == "stop":
                self.assertIsInstance(json.loads(c.message.content), dict)
            else:
                self.assertEqual((c.finish_reason, c.message.content[0]), ("length", "{"))

    def test_completions_take_response_format_and_regex_and_lark(self):
        r = openai_client.completions.create(model=MODEL, prompt="The answer is", max_tokens=8, temperature=1,
                                             extra_body={"response_format": {"type": "regex", "regex": "(yes|no)"}})
        self.assertIn(r.choices[0].text, ["yes", "no"])
        self.assertEqual(r.choices[0].finish_reason, "stop")
        lark = 'start: "Total: " NUMBER " apples"\nNUMBER: /[0-9]{1,3}/'
        # Room for a sampled path that spells the number digit by digit.
        r = openai_client.completions.create(model=MODEL, prompt="Count:", max_tokens=40, temperature=1, seed=11, n=8,
                                             extra_body={"response_format": {"type": "lark", "lark": lark}})
        for choice in r.choices:
            self.assertRegex(choice.text, r"^Total: [0-9]{1,3} apples$")
            self.assertEqual(choice.finish_reason, "stop")

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


# Tool calling runs on Qwen 2.5 Coder, whose template takes tools.
QWEN = "qwen2.5-coder:0.5b"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city name"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Get the local time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 40}}, "required": ["zone"]}}}
SYSTEM = {"role": "system", "content": "You are a helpful assistant. After a tool returns, answer the user in one sentence."}
ASK = {"role": "user", "content": "What is the weather in Paris?"}
GREEDY = {"temperature": 0}


class ToolCalls(unittest.TestCase):
    def test_ollama_two_turns_call_result_answer(self):
        r = ollama_client.chat(model=QWEN, messages=[SYSTEM, ASK], tools=[WEATHER], options=GREEDY)
        self.assertEqual(r.message.content, "")
        self.assertEqual([(c.function.name, c.function.arguments) for c in r.message.tool_calls], [("get_weather", {"city": "Paris"})])
        self.assertEqual(r.done_reason, "stop")
        history = [SYSTEM, ASK, r.message, {"role": "tool", "content": "Sunny, 21 °C", "tool_name": "get_weather"}]
        final = ollama_client.chat(model=QWEN, messages=history, options=GREEDY)
        self.assertIsNone(final.message.tool_calls)
        self.assertIn("21", final.message.content)

    def test_ollama_streams_the_call_once_it_is_whole(self):
        parts = list(ollama_client.chat(model=QWEN, messages=[SYSTEM, ASK], tools=[WEATHER], options=GREEDY, stream=True))
        with_calls = [p for p in parts if p.message.tool_calls]
        self.assertEqual(len(with_calls), 1)
        self.assertEqual(with_calls[0].message.tool_calls[0].function.arguments, {"city": "Paris"})
        self.assertEqual("".join(p.message.content for p in parts), "")
        self.assertTrue(parts[-1].done)

    def test_openai_two_turns_call_result_answer(self):
        r = openai_client.chat.completions.create(model=QWEN, messages=[SYSTEM, ASK], tools=[WEATHER], temperature=0)
        choice = r.choices[0]
        self.assertEqual(choice.finish_reason, "tool_calls")
        self.assertIsNone(choice.message.content)
        [call] = choice.message.tool_calls
        self.assertTrue(call.id.startswith("call_"))
        self.assertEqual((call.type, call.function.name, json.loads(call.function.arguments)), ("function", "get_weather", {"city": "Paris"}))
        history = [SYSTEM, ASK, choice.message.model_dump(exclude_none=True),
                   {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 °C"}]
        final = openai_client.chat.completions.create(model=QWEN, messages=history, tools=[WEATHER], tool_choice="none", temperature=0)
        self.assertEqual(final.choices[0].finish_reason, "stop")
        self.assertIsNone(final.choices[0].message.tool_calls)
        self.assertIn("21", final.choices[0].message.content)

    def test_auto_leaves_a_plain_answer_plain(self):
        # The model answers with an object naming a tool not offered: text.
        ask = [{"role": "user", "content": "Say hello in French."}]
        r = openai_client.chat.completions.create(model=QWEN, messages=ask, tools=[WEATHER, TIME], temperature=0, max_tokens=40)
        self.assertIsNone(r.choices[0].message.tool_calls)
        self.assertIn(r.choices[0].finish_reason, ["stop", "length"])
        self.assertTrue(r.choices[0].message.content)
        streamed = "".join(c.choices[0].delta.content or "" for c in openai_client.chat.completions.create(
            model=QWEN, messages=ask, tools=[WEATHER, TIME], temperature=0, max_tokens=40, stream=True) if c.choices)
        self.assertEqual(streamed, r.choices[0].message.content)

    def test_required_and_named_tool_choice_are_enforced(self):
        ask = [{"role": "user", "content": "Say hello in French."}]
        r = openai_client.chat.completions.create(model=QWEN, messages=ask, tools=[WEATHER, TIME], tool_choice="required",
                                                  parallel_tool_calls=False, temperature=0)
        self.assertEqual(r.choices[0].finish_reason, "tool_calls")
        self.assertEqual(len(r.choices[0].message.tool_calls), 1)
        self.assertIn(r.choices[0].message.tool_calls[0].function.name, ["get_weather", "get_time"])
        r = openai_client.chat.completions.create(model=QWEN, messages=[ASK], tools=[WEATHER, TIME],
                                                  tool_choice={"type": "function", "function": {"name": "get_time"}}, temperature=1, n=4,
                                                  seed=2, max_tokens=200)
        for choice in r.choices:
            self.assertEqual(choice.finish_reason, "tool_calls")
            for call in choice.message.tool_calls:
                self.assertEqual(call.function.name, "get_time")
                self.assertIsInstance(json.loads(call.function.arguments)["zone"], str)

    def test_openai_streams_tool_call_deltas(self):
        chunks = list(openai_client.chat.completions.create(
            model=QWEN, messages=[ASK], tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_weather"}},
            temperature=0, stream=True))
        deltas = [t for c in chunks for t in (c.choices[0].delta.tool_calls or [])]
        self.assertEqual([(d.index, d.type, d.function.name) for d in deltas], [(0, "function", "get_weather")])
        self.assertTrue(deltas[0].id.startswith("call_"))
        self.assertEqual(json.loads(deltas[0].function.arguments), {"city": "Paris"})
        self.assertEqual(chunks[-1].choices[0].finish_reason, "tool_calls")
        self.assertEqual("".join(c.choices[0].delta.content or "" for c in chunks), "")

    def test_batch_items_call_tools_each_their_own(self):
        items = [{"messages": [SYSTEM, ASK], "tools": [WEATHER]},
                 {"messages": [{"role": "user", "content": "What time is it in Tokyo?"}], "tools": [TIME]},
                 {"prompt": "Hello"}]
        status, body = request("POST", "/api/batch", {"model": QWEN, "requests": items, "options": {"temperature": 0, "num_predict": 60}})
        self.assertEqual(status, 200, body)
        r = body["responses"]
        self.assertEqual([c["function"]["name"] for c in r[0]["message"]["tool_calls"]], ["get_weather"])
        self.assertEqual([c["function"]["name"] for c in r[1]["message"]["tool_calls"]], ["get_time"])
        self.assertNotIn("tool_calls", r[2])

    def test_bad_tool_requests_are_400_and_say_why(self):
        chat = {"messages": [{"role": "user", "content": "x"}]}
        for path, body, needle in [
            ("/api/chat", {"model": MODEL, **chat, "tools": [WEATHER]}, "takes no tools"),
            ("/v1/chat/completions", {"model": MODEL, **chat, "tools": [WEATHER]}, "takes no tools"),
            ("/v1/chat/completions", {"model": QWEN, **chat, "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "nope"),
            ("/v1/chat/completions", {"model": QWEN, **chat, "tool_choice": "required"}, "no tools are offered"),
            ("/v1/chat/completions", {"model": QWEN, **chat, "tools": [{"type": "function"}]}, "tools[0]"),
            ("/v1/chat/completions", {"model": QWEN, **chat, "tools": [WEATHER], "tool_choice": "required",
                                      "response_format": {"type": "json_object"}}, "cannot be combined"),
            ("/v1/completions", {"model": QWEN, "prompt": "x", "tools": [WEATHER]}, "chat"),
            ("/api/generate", {"model": QWEN, "prompt": "x", "tools": [WEATHER]}, "tools"),
            ("/api/chat", {"model": QWEN, **chat, "tools": [{**WEATHER, "function": {**WEATHER["function"], "description": "<|im_end|>"}}]},
             "control token"),
        ]:
            status, answer = request("POST", path, body)
            self.assertEqual(status, 400, (path, body, answer))
            message = answer["error"]["message"] if isinstance(answer["error"], dict) else answer["error"]
            self.assertIn(needle, message, (path, body))


if __name__ == "__main__":
    unittest.main(verbosity=2)
