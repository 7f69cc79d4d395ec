"""Writes src/server/openapi.json, the OpenAPI 3.1 description of every
route `caravan serve` answers. Edit this file, then run it:
    python3 tools/openapi.py"""

import json
import pathlib

def obj(props, required=(), extra=True):
    o = {"type": "object", "properties": props}
    if required:
        o["required"] = list(required)
    if not extra:
        o["additionalProperties"] = False
    return o

S = {"type": "string"}
I = {"type": "integer"}
N = {"type": "number"}
B = {"type": "boolean"}
def arr(x): return {"type": "array", "items": x}
def ref(name): return {"$ref": f"#/components/schemas/{name}"}

schemas = {
    "OllamaOptions": obj({
        "num_predict": {"type": "integer", "description": "Most tokens to generate; -1 (default) or -2: until the end of the context"},
        "temperature": N, "top_k": I, "top_p": N, "min_p": N, "seed": I, "repeat_penalty": N, "repeat_last_n": I,
        "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2}, "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "stop": {"oneOf": [S, arr(S)], "description": "At most 16 sequences of at most 256 bytes"},
        "num_ctx": {"type": "integer", "description": "A per-request cap on prompt plus answer; never a reservation"},
    }),
    "OllamaError": obj({"error": S}, ["error"]),
    "KeepAlive": {"oneOf": [N, S], "description": "How long the model stays loaded after this request: seconds, or a duration (\"5m\", \"1h30m\"); negative: for ever; 0 with no prompt: unload now"},
    "OpenAIError": obj({"error": obj({"message": S, "type": S, "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}, ["message", "type", "param", "code"])}, ["error"]),
    "ToolCall": obj({"id": S, "type": {"const": "function"}, "index": I, "function": obj({
        "name": S, "arguments": {"description": "An object (Ollama) or a JSON string holding one (OpenAI)"}}, ["name"])}, ["function"]),
    "Message": obj({"role": {"enum": ["system", "developer", "user", "assistant", "tool"]}, "content": {"oneOf": [S, {"type": "null"}, arr(obj({"type": {"const": "text"}, "text": S}))]},
                    "tool_calls": {**arr(ref("ToolCall")), "description": "An assistant's calls"}, "tool_name": S, "tool_call_id": S}, ["role"]),
    "Tool": obj({"type": {"const": "function"}, "function": obj({"name": S, "description": S, "parameters": {"type": "object", "description": "A JSON Schema"}}, ["name"])}, ["type", "function"]),
    "OllamaFormat": {"oneOf": [{"const": "json"}, {"type": "object", "description": "A JSON Schema"}], "description": "Constrain the answer: any JSON object, or one valid under the schema"},
    "ResponseFormat": {"oneOf": [
        obj({"type": {"enum": ["text", "json_object"]}}, ["type"]),
        obj({"type": {"const": "json_schema"}, "json_schema": obj({"name": S, "schema": {"type": "object"}, "strict": B, "description": S}, ["schema"])}, ["type", "json_schema"]),
        obj({"type": {"const": "regex"}, "regex": S}, ["type", "regex"]),
        obj({"type": {"const": "lark"}, "lark": S}, ["type", "lark"]),
    ], "description": "regex and lark are extensions"},
    "ToolChoice": {"oneOf": [{"enum": ["none", "auto", "required"]}, obj({"type": {"const": "function"}, "function": obj({"name": S}, ["name"])}, ["function"])],
                   "description": "required and a named function are enforced by a grammar"},
    "TokenLogprob": obj({"token": S, "logprob": {"type": "number", "maximum": 0}, "bytes": arr(I)}, ["token", "logprob", "bytes"]),
    "Logprob": obj({"token": S, "logprob": {"type": "number", "maximum": 0}, "bytes": arr(I), "top_logprobs": arr(ref("TokenLogprob"))},
                   ["token", "logprob", "bytes", "top_logprobs"]),
    "ChatLogprobs": obj({"content": arr(ref("Logprob")), "refusal": {"type": "null"}}, ["content"]),
    "CompletionLogprobs": obj({"tokens": arr(S), "token_logprobs": arr(N), "top_logprobs": arr({"type": "object", "additionalProperties": N}), "text_offset": arr(I)},
                              ["tokens", "token_logprobs", "top_logprobs", "text_offset"]),
    "GenerateRequest": obj({
        "model": S, "prompt": {"type": "string", "description": "Empty or absent: only load the model (done_reason \"load\")"}, "system": S,
        "raw": {"type": "boolean", "description": "Send the prompt without the chat template"}, "stream": {"type": "boolean", "default": True},
        "keep_alive": ref("KeepAlive"), "options": ref("OllamaOptions"),
        "format": ref("OllamaFormat"),
        "logprobs": {"type": "boolean", "description": "Each token's log-probability under the model's own distribution, before sampling transforms"},
        "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20, "description": "Alternatives per token; needs logprobs"},
    }, ["model"]),
    "ChatRequest": obj({"model": S, "messages": arr(ref("Message")), "stream": {"type": "boolean", "default": True}, "keep_alive": ref("KeepAlive"), "options": ref("OllamaOptions"),
                        "format": ref("OllamaFormat"), "tools": {**arr(ref("Tool")), "description": "For a model whose template takes tools"},
                        "logprobs": {"type": "boolean", "description": "Each token's log-probability under the model's own distribution, before sampling transforms"},
        "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20, "description": "Alternatives per token; needs logprobs"},}, ["model", "messages"]),
    "OllamaFinal": obj({
        "model": S, "created_at": S, "response": S, "message": ref("Message"), "done": B, "done_reason": {"enum": ["stop", "length", "load", "unload"]},
        "total_duration": {"type": "integer", "description": "nanoseconds"}, "load_duration": I, "prompt_eval_count": I,
        "prompt_eval_duration": I, "eval_count": I, "eval_duration": I,
        "logprobs": {**arr(ref("Logprob")), "description": "When asked for: the tokens this line brings"},
    }),
    "BatchItem": obj({"prompt": S, "system": S, "raw": B, "messages": arr(ref("Message")), "options": ref("OllamaOptions"),
                      "format": ref("OllamaFormat"), "tools": arr(ref("Tool")), "logprobs": B, "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
                      "input": {"oneOf": [S, arr(S)], "description": "An embedding item, as /api/embed takes it (with truncate alone)"}, "truncate": B},
                     extra=True),
    "BatchRequest": obj({
        "model": S, "requests": {**arr(ref("BatchItem")), "description": "Generate items (prompt) or chat items (messages), or else all embedding items (input); at most --max-batch-items (default 256)"},
        "options": {**ref("OllamaOptions"), "description": "Shared options; an item's own options override them"}, "stream": {"type": "boolean", "default": False},
        "format": {**ref("OllamaFormat"), "description": "Shared format; an item's own format overrides it"}, "keep_alive": ref("KeepAlive"),
    }, ["model", "requests"]),
    "BatchResponse": obj({
        "model": S, "created_at": S, "done": B, "items": I,
        "admitted_step": {"type": "integer", "description": "The engine step the items started at"},
        "admitted_together": {"type": "boolean", "description": "Every item started in that same step"},
        "total_duration": I, "load_duration": I, "prompt_eval_count": {"type": "integer", "description": "An embedding batch's tokens"},
        "responses": arr({"allOf": [ref("OllamaFinal"), obj({"index": I, "started_step": I,
                                                              "embeddings": {**arr(arr(N)), "description": "An embedding item's, one per input"}})]}),
    }),
    "CompletionRequest": obj({
        "model": S, "prompt": {"oneOf": [S, arr(S), arr(I), arr(arr(I))]}, "n": {"type": "integer", "minimum": 1, "maximum": 16},
        "max_tokens": {"type": "integer", "minimum": 1, "default": 16}, "temperature": N, "top_p": N, "stop": {"oneOf": [S, arr(S)]}, "seed": I,
        "stream": B, "stream_options": obj({"include_usage": B}), "ignore_eos": {"type": "boolean", "description": "Extension: generate past end-of-sequence (benchmarks)"},
        "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2}, "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2}, "best_of": {"const": 1},
        "response_format": {**ref("ResponseFormat"), "description": "Extension: as on chat completions"},
        "logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 20, "description": "Alternatives per token; the drawn token's log-probability always comes too"},
    }, ["model", "prompt"]),
    "ChatCompletionRequest": obj({
        "model": S, "messages": arr(ref("Message")), "n": {"type": "integer", "minimum": 1, "maximum": 16}, "max_tokens": I, "max_completion_tokens": I,
        "temperature": N, "top_p": N, "stop": {"oneOf": [S, arr(S)]}, "seed": I, "stream": B, "stream_options": obj({"include_usage": B}), "ignore_eos": B,
        "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2}, "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "response_format": ref("ResponseFormat"), "tools": arr(ref("Tool")), "tool_choice": ref("ToolChoice"), "parallel_tool_calls": B,
        "logprobs": B, "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20, "description": "Needs logprobs: true"},
    }, ["model", "messages"]),
    "Usage": obj({"prompt_tokens": I, "completion_tokens": I, "total_tokens": I}),
    "Completion": obj({"id": S, "object": {"enum": ["text_completion", "chat.completion"]}, "created": I, "model": S,
                       "choices": arr(obj({"index": I, "text": S, "message": ref("Message"), "finish_reason": {"enum": ["stop", "length", "tool_calls"]},
                                           "logprobs": {"anyOf": [{"type": "null"}, ref("ChatLogprobs"), ref("CompletionLogprobs")], "description": "null unless asked for"}})),
                       "usage": ref("Usage")}),
    "EmbeddingRequest": obj({"model": S, "input": {"oneOf": [S, arr(S), arr(I), arr(arr(I))]}, "encoding_format": {"enum": ["float", "base64"]}}, ["model", "input"]),
    "Embeddings": obj({"object": S, "model": S, "data": arr(obj({"object": S, "index": I, "embedding": {"oneOf": [arr(N), S]}})), "usage": ref("Usage")}),
    "ModelRequest": obj({"model": S}, ["model"]),
    "PullRequest": obj({"model": S, "name": S, "stream": {"type": "boolean", "default": True}, "insecure": B}),
    "CopyRequest": obj({"source": S, "destination": S}, ["source", "destination"]),
    "CreateRequest": obj({"model": S, "from": S, "files": {"type": "object", "additionalProperties": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}},
                          "system": {**S, "description": "The model's default system prompt"}, "parameters": {**ref("OllamaOptions"), "description": "The model's default options"},
                          "stream": {"type": "boolean", "default": True}}, ["model"]),
    "Status": obj({"status": S, "digest": S, "total": I, "completed": I, "error": S}),
    "TokenizeRequest": obj({
        "model": S, "content": {**S, "description": "llama.cpp's shape"}, "add_special": B, "parse_special": {"type": "boolean", "default": True}, "with_pieces": B,
        "prompt": {**S, "description": "vLLM's shape"}, "messages": arr(ref("Message")), "add_generation_prompt": {"type": "boolean", "default": True},
        "add_special_tokens": {"type": "boolean", "default": True}, "return_token_strs": B, "tools": arr(ref("Tool")),
    }, extra=False),
    "Tokens": obj({"tokens": arr({"oneOf": [I, obj({"id": I, "piece": {"oneOf": [S, arr(I)]}})]}), "count": I, "max_model_len": I,
                   "token_strs": {"oneOf": [arr(S), {"type": "null"}]}}, ["tokens"]),
    "DetokenizeRequest": obj({"model": S, "tokens": arr(I)}, ["tokens"], extra=False),
    "OllamaEmbedRequest": obj({"model": S, "input": {"oneOf": [S, arr(S)]}, "truncate": {"type": "boolean", "default": True}, "keep_alive": ref("KeepAlive")}, ["model"]),
    "OllamaEmbeddingsRequest": obj({"model": S, "prompt": S}, ["model", "prompt"]),
    "FileObject": obj({"id": S, "object": {"enum": ["file"]}, "bytes": I, "created_at": I, "filename": S, "purpose": {"enum": ["batch", "batch_output"]},
                       "status": S, "expires_at": {"type": "null"}, "status_details": {"type": "null"}}, ["id", "object", "bytes", "created_at", "filename", "purpose"]),
    "FileUpload": obj({"file": {"type": "string", "format": "binary", "description": "JSONL: one {custom_id, method: POST, url, body} a line"},
                       "purpose": {"enum": ["batch"]}}, ["file", "purpose"], extra=False),
    "FileList": obj({"object": S, "data": arr(ref("FileObject")), "first_id": {"type": ["string", "null"]}, "last_id": {"type": ["string", "null"]}, "has_more": B}),
    "FileDeleted": obj({"id": S, "object": S, "deleted": B}),
    "BatchJobRequest": obj({"input_file_id": S, "endpoint": {"enum": ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]},
                          "completion_window": {"enum": ["24h"]},
                          "metadata": {"type": ["object", "null"], "maxProperties": 16, "additionalProperties": {"type": "string", "maxLength": 512}}},
                         ["input_file_id", "endpoint", "completion_window"], extra=False),
    "Batch": obj({
        "id": S, "object": {"enum": ["batch"]}, "endpoint": S, "model": {"type": ["string", "null"], "description": "The model the requests name, once validated"},
        "input_file_id": S, "completion_window": S,
        "status": {"enum": ["validating", "in_progress", "finalizing", "completed", "failed", "cancelling", "cancelled", "expired"]},
        "output_file_id": {"type": ["string", "null"], "description": "Set once the batch ends, if any request was answered"},
        "error_file_id": {"type": ["string", "null"], "description": "Set once the batch ends, if any request failed"},
        "errors": {"oneOf": [{"type": "null"}, obj({"object": S, "data": arr(obj({"code": S, "message": S, "param": {"type": ["string", "null"]}, "line": {"type": ["integer", "null"]}}))})],
                   "description": "Why validation failed"},
        **{f: {"type": ["integer", "null"]} for f in ["in_progress_at", "finalizing_at", "completed_at", "failed_at", "cancelling_at", "cancelled_at", "expired_at"]},
        "created_at": I, "expires_at": I,
        "request_counts": obj({"total": I, "completed": I, "failed": I}, ["total", "completed", "failed"]),
        "metadata": {"type": ["object", "null"], "additionalProperties": S},
    }, ["id", "object", "endpoint", "input_file_id", "completion_window", "status", "created_at", "request_counts"]),
    "BatchList": obj({"object": S, "data": arr(ref("Batch")), "first_id": {"type": ["string", "null"]}, "last_id": {"type": ["string", "null"]}, "has_more": B}),
    "ModelDetails": obj({"parent_model": S, "format": S, "family": S, "families": arr(S), "parameter_size": S, "quantization_level": S}),
}

def body(schema): return {"required": True, "content": {"application/json": {"schema": ref(schema)}}}
def ok(schema=None, desc="OK", stream=None):
    content = {"application/json": {"schema": ref(schema) if isinstance(schema, str) else (schema or {})}}
    if stream == "text/event-stream":
        # One event: its data is a chunk's JSON, or [DONE] at the end.
        content[stream] = {"schema": obj({"data": {**S, "description": "A chunk (JSON) or [DONE]"}, "event": S, "id": S}, ["data"])}
    elif stream:
        content[stream] = {"schema": S}
    return {"description": desc, "content": content}
def errors(kind):
    e = {"content": {"application/json": {"schema": ref("OllamaError" if kind == "ollama" else "OpenAIError")}}}
    busy = "503" if kind == "ollama" else "429"
    return {"400": {"description": "Malformed JSON, a wrong type, a missing field, a limit broken", **e},
            "404": {"description": "Unknown model", **e}, "413": {"description": "Body over --max-body", **e},
            busy: {"description": "More than --max-queue requests wait; see Retry-After", **e}}

def post(summary, req, resp, kind, stream=None):
    return {"post": {"summary": summary, "requestBody": body(req), "responses": {"200": ok(resp, stream=stream), **errors(kind)}}}
def get(summary, resp=None, text=False):
    r = {"description": "OK", "content": {"text/plain": {"schema": S}}} if text else ok(resp)
    return {"get": {"summary": summary, "responses": {"200": r}}}

def openai_error(desc): return {"description": desc, "content": {"application/json": {"schema": ref("OpenAIError")}}}
def query(name, schema): return {"name": name, "in": "query", "required": False, "schema": schema}
def path_param(name): return {"name": name, "in": "path", "required": True, "schema": S}

paths = {
    "/": {**get("\"Caravan is running\"", text=True), "head": {"summary": "Liveness", "responses": {"200": {"description": "OK"}}}},
    "/health": {"get": {"summary": "200 once the default model is loaded, 503 before", "responses": {"200": {"description": "Ready"}, "503": {"description": "Loading"}}}},
    "/metrics": get("Prometheus metrics: sequences, KV blocks, tokens, preemptions, latency and batch-size histograms", text=True),
    "/openapi.json": get("This description"),
    "/api/version": get("Server version", obj({"version": S})),
    "/api/generate": post("Generate from a prompt (NDJSON stream unless stream is false)", "GenerateRequest", "OllamaFinal", "ollama", "application/x-ndjson"),
    "/api/chat": post("Answer a conversation (NDJSON stream unless stream is false)", "ChatRequest", "OllamaFinal", "ollama", "application/x-ndjson"),
    "/api/embed": post("Embed one or many inputs (mean-pooled, unit length)",
                       "OllamaEmbedRequest", obj({"model": S, "embeddings": arr(arr(N)), "total_duration": I, "load_duration": I, "prompt_eval_count": I}), "ollama"),
    "/api/embeddings": post("Embed one prompt (legacy)", "OllamaEmbeddingsRequest", obj({"embedding": arr(N)}), "ollama"),
    "/api/tags": get("Installed models", obj({"models": arr(obj({"name": S, "model": S, "modified_at": S, "size": I, "digest": S, "details": ref("ModelDetails")}))})),
    "/api/show": post("A model's details, template and parameters", "ModelRequest", obj({"template": S, "details": ref("ModelDetails"), "model_info": {"type": "object"}, "modelfile": S, "capabilities": arr(S), "parameters": S, "system": S, "license": S}), "ollama"),
    "/api/ps": get("Loaded models", obj({"models": arr(obj({"name": S, "model": S, "size": I, "digest": S, "expires_at": S, "size_vram": I, "context_length": I}))})),
    "/api/pull": post("Install a catalog model (NDJSON status lines unless stream is false)", "PullRequest", "Status", "ollama", "application/x-ndjson"),
    "/api/create": post("A model from an installed one (from) or an uploaded GGUF blob (files)", "CreateRequest", "Status", "ollama", "application/x-ndjson"),
    "/api/copy": {"post": {"summary": "Another name for an installed model (an existing name is refused)", "requestBody": body("CopyRequest"),
                           "responses": {"200": {"description": "Copied"}, **errors("ollama")}}},
    "/api/delete": {"delete": {"summary": "Remove a model (once its running requests end)", "requestBody": body("PullRequest"),
                               "responses": {"200": {"description": "Deleted"}, **errors("ollama")}}},
    "/api/push": {"post": {"summary": "Refused: there is no registry to push to", "responses": {"400": errors("ollama")["400"]}}},
    "/api/blobs/{digest}": {
        "parameters": [{"name": "digest", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}}],
        "head": {"summary": "Whether the blob is here", "responses": {"200": {"description": "Here"}, "404": {"description": "Not here"}, "400": errors("ollama")["400"]}},
        "post": {"summary": "Upload a blob; kept only if its SHA-256 is the digest", "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                 "responses": {"201": {"description": "Stored"}, "200": {"description": "Already here"}, "400": errors("ollama")["400"]}},
    },
    "/api/batch": post("Many generate or chat items admitted to the engine in the same step, or embedding items whose inputs share forward passes; NDJSON lines with each item's index when streaming, then a summary line",
                       "BatchRequest", "BatchResponse", "ollama", "application/x-ndjson"),
    "/v1/completions": post("OpenAI completions; every prompt and every one of n choices run as one gang (SSE when stream)", "CompletionRequest", "Completion", "openai", "text/event-stream"),
    "/v1/chat/completions": post("OpenAI chat completions (SSE when stream)", "ChatCompletionRequest", "Completion", "openai", "text/event-stream"),
    "/v1/embeddings": post("OpenAI embeddings", "EmbeddingRequest", "Embeddings", "openai"),
    "/v1/files": {
        "post": {"summary": "Upload a batch input file (multipart, streamed to disk; over --max-file-size is a 413)",
                 "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": ref("FileUpload")}}},
                 "responses": {"200": ok("FileObject"), "400": openai_error("No file, or a purpose other than batch"), "413": openai_error("Over --max-file-size")}},
        "get": {"summary": "Files, newest first unless order=asc", "parameters": [
                    query("purpose", S), query("limit", {"type": "integer", "minimum": 1, "maximum": 10000}), query("after", S), query("order", {"enum": ["asc", "desc"]})],
                "responses": {"200": ok("FileList"), "400": openai_error("A bad or unknown query parameter")}},
    },
    "/v1/files/{file_id}": {
        "parameters": [path_param("file_id")],
        "get": {"summary": "One file", "responses": {"200": ok("FileObject"), "404": openai_error("No such file")}},
        "delete": {"summary": "Delete a file (not the input of a batch still running: 409)",
                   "responses": {"200": ok("FileDeleted"), "404": openai_error("No such file"), "409": openai_error("A running batch reads it")}},
    },
    "/v1/files/{file_id}/content": {
        "parameters": [path_param("file_id")],
        "get": {"summary": "A file's bytes; a batch's output and error files are JSONL in OpenAI's batch output format",
                "responses": {"200": {"description": "The bytes", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                              "404": openai_error("No such file")}},
    },
    "/v1/batches": {
        "post": {"summary": "Run a file's requests as a durable background job; validation and progress show in the batch object",
                 "requestBody": body("BatchJobRequest"),
                 "responses": {"200": ok("Batch"), "400": openai_error("A bad field, endpoint, window or input file"), "404": openai_error("No such input file")}},
        "get": {"summary": "Batches, newest first", "parameters": [query("limit", {"type": "integer", "minimum": 1, "maximum": 100}), query("after", S)],
                "responses": {"200": ok("BatchList"), "400": openai_error("A bad or unknown query parameter")}},
    },
    "/v1/batches/{batch_id}": {
        "parameters": [path_param("batch_id")],
        "get": {"summary": "One batch", "responses": {"200": ok("Batch"), "404": openai_error("No such batch")}},
    },
    "/v1/batches/{batch_id}/cancel": {
        "parameters": [path_param("batch_id")],
        "post": {"summary": "Cancel a batch: it stops its requests in flight and ends cancelled, with the answers written so far",
                 "responses": {"200": ok("Batch"), "404": openai_error("No such batch"), "409": openai_error("The batch has ended or is finalizing")}},
    },
    "/tokenize": post("Tokens of a text (llama.cpp's content) or of a prompt or conversation (vLLM's)", "TokenizeRequest", "Tokens", "openai"),
    "/detokenize": post("Text of tokens, control tokens as their text", "DetokenizeRequest", obj({"content": S, "prompt": S}, ["content", "prompt"]), "openai"),
    "/v1/models": get("Installed models", obj({"object": S, "data": arr(obj({"id": S, "object": S, "created": I, "owned_by": S}))})),
    "/v1/models/{model}": {"get": {"summary": "One installed model", "parameters": [{"name": "model", "in": "path", "required": True, "schema": S}],
                                   "responses": {"200": ok(obj({"id": S, "object": S, "created": I, "owned_by": S})),
                                                 "400": {**errors("openai")["400"], "description": "Not a model name"}, "404": errors("openai")["404"]}}},
}

spec = {"openapi": "3.1.0", "info": {"title": "Caravan", "version": "0.1.0", "description": "Ollama- and OpenAI-compatible LLM server with continuous batching and a batch API"},
        "paths": paths, "components": {"schemas": schemas}}
out = pathlib.Path(__file__).resolve().parent.parent / "src/server/openapi.json"
out.write_text(json.dumps(spec, indent=1) + "\n")
print(f"wrote {out}")
