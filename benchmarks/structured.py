"""Structured-output figures (issue 18), measured in one run on the same model (default: the demo
model) and server (dynamic batching):

  * decode tokens/s with a JSON schema as a ratio to the same requests unconstrained, at
    concurrency 1 and 8 (target >= 0.85x). Both run to max_tokens: the schema asks for a list
    longer than that, the plain requests set ignore_eos;
  * grammar compile time for a 20-field schema: first, and again from the cache (in-process,
    the engine's own ``GrammarCache`` on the model's tokenizer);
  * 100 requests over 10 different schemas, 8 at a time: the share that parse and validate
    (target 100%).

Usage: python benchmarks/structured.py [--model DIR] [--requests 8] [--output-tokens 64] [--valid-requests 100]
                                      [--parts compile,throughput,validity]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jsonschema

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import EngineServer, demo_model  # noqa: E402

MESSAGES = [{"role": "user", "content": "List people with their name, age and city as JSON."}]
LONG_LIST = {"type": "object", "properties": {"people": {"type": "array", "minItems": 40, "items": {
    "type": "object", "properties": {"name": {"type": "string", "maxLength": 24},
                                     "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                     "city": {"type": "string", "maxLength": 24}},
    "required": ["name", "age", "city"], "additionalProperties": False}}},
    "required": ["people"], "additionalProperties": False}
TYPES = [{"type": "integer", "minimum": 0, "maximum": 1000}, {"type": "string", "maxLength": 16}, {"type": "boolean"}]
TWENTY_FIELDS = {"type": "object", "properties": {f"field_{i}": TYPES[i % 3] for i in range(20)},
                 "required": [f"field_{i}" for i in range(20)], "additionalProperties": False}


def ten_schemas() -> list[dict]:
    """Ten different shapes: flat, enums, arrays, nesting, optional fields."""
    person = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 120}},
              "required": ["name", "age"], "additionalProperties": False}
    schemas = [
        person,
        {"type": "object", "properties": {"answer": {"enum": ["yes", "no", "maybe"]}}, "required": ["answer"]},
        {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 10},
                                                   "minItems": 1, "maxItems": 4}}, "required": ["tags"]},
        {"type": "object", "properties": {"owner": person, "pets": {"type": "integer", "minimum": 0, "maximum": 9}},
         "required": ["owner", "pets"]},
        {"type": "object", "properties": {"ok": {"type": "boolean"}, "note": {"type": "string", "maxLength": 30}},
         "required": ["ok"]},
        {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}}, "required": ["x", "y"]},
        {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                          "country": {"enum": ["FR", "IT", "DE", "JP"]}},
         "required": ["city", "country"]},
        {"type": "object", "properties": {"scores": {"type": "array", "items": {"type": "integer", "minimum": 0,
                                                                                "maximum": 100},
                                                     "minItems": 2, "maxItems": 5}}, "required": ["scores"]},
        {"type": "object", "properties": {"title": {"type": "string", "maxLength": 30}, "year": {
            "type": "integer", "minimum": 1900, "maximum": 2100}, "genre": {"enum": ["drama", "comedy"]}},
         "required": ["title", "year", "genre"]},
        {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "object", "properties": {
            "c": {"type": "boolean"}}, "required": ["c"]}}, "required": ["b"]}}, "required": ["a"]},
    ]
    return [{**schema, "additionalProperties": False} for schema in schemas]


def stream_once(srv: EngineServer, model: str, body: dict) -> tuple[int, float]:
    """(completion tokens, seconds from the first token to the last) of one streamed request."""
    body = {"model": model, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}, **body}
    first = last = None
    tokens = 0
    with httpx.stream("POST", srv.url + "/v1/chat/completions", headers=srv.headers, json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
    return tokens, (last - first) if first and last else 0.0


def decode_rate(srv: EngineServer, model: str, concurrency: int, requests: int, body: dict) -> float:
    """Aggregate decode tokens/s: the tokens after each request's first, over the wall time."""
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda i: stream_once(srv, model, {**body, "seed": i}), range(requests)))
    wall = time.perf_counter() - started
    return sum(tokens - 1 for tokens, _ in results) / wall


def compile_times(model_dir: Path) -> tuple[float, float, float]:
    """(vocabulary read, first compile, cached compile) in seconds, in-process."""
    from transformers import AutoTokenizer

    from engine.requests import Constraint
    from engine.runtime.grammar import GrammarCache
    from engine.structured import json_schema_constraint

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    started = time.perf_counter()
    cache = GrammarCache(tokenizer, len(tokenizer), (tokenizer.eos_token_id,))
    vocabulary = time.perf_counter() - started
    constraint: Constraint = json_schema_constraint(TWENTY_FIELDS)
    started = time.perf_counter()
    cache.compile(constraint)
    first = time.perf_counter() - started
    started = time.perf_counter()
    cache.compile(json_schema_constraint(json.loads(json.dumps(TWENTY_FIELDS))))  # an equal schema, new objects
    return vocabulary, first, time.perf_counter() - started


def validity(srv: EngineServer, model: str, total: int, output_tokens: int) -> tuple[int, list[str]]:
    schemas = ten_schemas()

    def one(i: int) -> str:
        schema = schemas[i % len(schemas)]
        r = httpx.post(srv.url + "/v1/chat/completions", headers=srv.headers, timeout=600, json={
            "model": model, "messages": MESSAGES, "max_tokens": output_tokens, "temperature": 0.7, "seed": i,
            "response_format": {"type": "json_schema", "json_schema": {"name": f"s{i % 10}", "schema": schema}}})
        if r.status_code != 200:
            return f"request {i}: HTTP {r.status_code} {r.text[:200]}"
        choice = r.json()["choices"][0]
        text = choice["message"]["content"]
        try:
            jsonschema.validate(json.loads(text), schema)
        except (ValueError, jsonschema.ValidationError) as exc:
            return (f"request {i} (schema {i % 10}, finish_reason {choice['finish_reason']}): "
                    f"{type(exc).__name__}: {str(exc)[:120]} in {text[:80]!r}")
        return ""

    with ThreadPoolExecutor(8) as pool:
        problems = [p for p in pool.map(one, range(total)) if p]
    return total - len(problems), problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--requests", type=int, default=8, help="requests per throughput level at concurrency 8")
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--valid-requests", type=int, default=100)
    parser.add_argument("--parts", default="compile,throughput,validity",
                        help="the measurements to run, comma-separated (default: all three)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    model_dir = args.model or demo_model()
    if "compile" in parts:
        vocabulary_s, first_s, cached_s = compile_times(model_dir)
        print(f"grammar compile, 20-field schema: first {first_s * 1000:.1f} ms, cached {cached_s * 1000:.3f} ms "
              f"(reading the vocabulary once per model: {vocabulary_s * 1000:.0f} ms)", flush=True)
    constrained = {"max_tokens": args.output_tokens, "temperature": 0.7,
                   "response_format": {"type": "json_schema", "json_schema": {"name": "people", "schema": LONG_LIST}}}
    plain = {"max_tokens": args.output_tokens, "temperature": 0.7, "ignore_eos": True}
    if not parts & {"throughput", "validity"}:
        return 0
    with EngineServer(model_dir, extra_args=["--batching-mode", "dynamic"]) as srv:
        name = model_dir.name
        decode_rate(srv, name, 2, 2, constrained)  # warm-up: the schema compiles, the vocabulary is read
        decode_rate(srv, name, 2, 2, plain)
        for concurrency in (1, 8) if "throughput" in parts else ():
            requests = args.requests if concurrency > 1 else max(args.requests // 4, 2)
            # Alternate the two so the machine's other load falls on both alike.
            unconstrained = decode_rate(srv, name, concurrency, requests, plain)
            with_schema = decode_rate(srv, name, concurrency, requests, constrained)
            print(f"{model_dir.name}, {args.output_tokens} tokens per request, concurrency {concurrency}: "
                  f"unconstrained {unconstrained:.1f} tok/s, JSON schema {with_schema:.1f} tok/s = "
                  f"{with_schema / unconstrained:.2f}x (target >= 0.85x)", flush=True)
        if "validity" not in parts:
            return 0
        valid, problems = validity(srv, name, args.valid_requests, 200)
    print(f"{args.valid_requests} requests over 10 schemas: {valid}/{args.valid_requests} parse and validate "
          f"(target 100%)")
    for problem in problems[:10]:
        print("  " + problem)
    return 0 if valid == args.valid_requests else 1


if __name__ == "__main__":
    sys.exit(main())
