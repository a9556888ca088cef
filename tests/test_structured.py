"""Structured outputs on a real engine: replies decoded under a JSON schema's grammar parse and
validate (the tiny random model would never write JSON by itself), in a batch beside plain
requests that stay exactly what model.generate gives; what cannot be served is a 400 that says
what is supported."""

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import httpx
import jsonschema
import pytest
from pydantic import BaseModel, Field

MODES = ["dynamic", "sequential"]
MESSAGES = [{"role": "user", "content": "Describe a person."}]


class Person(BaseModel):
    name: str = Field(max_length=12)
    age: int = Field(ge=0, le=120)
    employed: bool
    colour: Literal["red", "green", "blue"]


SCHEMAS = [
    {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False},
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99},
                                      "tag": {"enum": ["a", "b"]}},
     "required": ["n", "tag"], "additionalProperties": False},
    {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "integer", "minimum": 0,
                                                                            "maximum": 9},
                                                "minItems": 1, "maxItems": 3}},
     "required": ["items"], "additionalProperties": False},
    {"type": "object", "properties": {"word": {"type": "string", "maxLength": 6}}, "required": ["word"],
     "additionalProperties": False},
]


def worker(worker_pool, llama_dir, mode):
    # The same arguments as test_batching's workers: the session shares them.
    return worker_pool.get(llama_dir, "--batching-mode", mode, "--max-wait-ms", "300")


def openai_client(srv):
    from openai import OpenAI

    return OpenAI(base_url=srv.url + "/v1", api_key=srv.api_key, max_retries=0, timeout=120)


def post(srv, path, body):
    return httpx.post(srv.url + path, headers=srv.headers, timeout=120, json={"model": "tiny-llama", **body})


@pytest.mark.parametrize("mode", MODES)
def test_sdk_parse_with_a_pydantic_model(worker_pool, llama_dir, mode):
    client = openai_client(worker(worker_pool, llama_dir, mode))
    completion = client.chat.completions.parse(model="tiny-llama", messages=MESSAGES, response_format=Person,
                                               max_tokens=120, temperature=0)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    person = choice.message.parsed
    assert isinstance(person, Person)
    assert Person.model_validate_json(choice.message.content) == person


def test_json_object_mode_gives_an_object(worker_pool, llama_dir):
    srv = worker(worker_pool, llama_dir, "dynamic")
    r = post(srv, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 120, "temperature": 0.7, "seed": 3,
                                           "response_format": {"type": "json_object"}})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    if choice["finish_reason"] == "stop":  # a sampled object may run past max_tokens; one that ended parses
        assert isinstance(json.loads(choice["message"]["content"]), dict)
    else:
        assert choice["message"]["content"].startswith("{")


def test_guided_json_on_text_completions(worker_pool, llama_dir):
    srv = worker(worker_pool, llama_dir, "dynamic")
    r = post(srv, "/v1/completions", {"prompt": "Hello", "max_tokens": 60, "temperature": 0,
                                      "guided_json": SCHEMAS[1]})
    assert r.status_code == 200, r.text
    jsonschema.validate(json.loads(r.json()["choices"][0]["text"]), SCHEMAS[1])


def test_rows_with_different_schemas_and_plain_rows_share_a_batch(worker_pool, llama_dir, greedy_reference):
    """Each row follows its own grammar; the plain rows beside them are exactly generate's."""
    srv = worker(worker_pool, llama_dir, "dynamic")
    plain = [("The capital of France is", 16), ("def add(a, b):", 12)]
    expected = [greedy_reference(llama_dir, prompt, n) for prompt, n in plain]
    batches_before = srv.metric("engine_batch_size_count")
    requests_before = srv.metric("engine_batch_size_sum")

    def structured(index):
        schema = SCHEMAS[index % len(SCHEMAS)]
        r = post(srv, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 80, "temperature": 0.8,
                                               "seed": index, "response_format": {
                                                   "type": "json_schema",
                                                   "json_schema": {"name": f"s{index}", "schema": schema}}})
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "stop", choice
        jsonschema.validate(json.loads(choice["message"]["content"]), schema)

    def greedy(args):
        r = post(srv, "/v1/completions", {"prompt": args[0], "max_tokens": args[1], "temperature": 0})
        return r.json()["choices"][0]["text"]

    with ThreadPoolExecutor(8) as pool:
        checks = [pool.submit(structured, index) for index in range(6)]
        texts = list(pool.map(greedy, plain))
        for check in checks:
            check.result()
    assert texts == expected
    batches = srv.metric("engine_batch_size_count") - batches_before
    assert (srv.metric("engine_batch_size_sum") - requests_before) / batches > 1, "never decoded together"


def test_schema_compiles_once_per_schema(worker_pool, llama_dir):
    srv = worker(worker_pool, llama_dir, "dynamic")
    schema = {"type": "object", "properties": {"once": {"type": "boolean"}}, "required": ["once"]}
    for _ in range(2):
        r = post(srv, "/v1/completions", {"prompt": "Hi", "max_tokens": 20, "temperature": 0, "guided_json": schema})
        assert r.status_code == 200 and json.loads(r.json()["choices"][0]["text"])["once"] in (True, False)
    compiles = [e for e in srv.logs() if e.get("event") == "grammar_compiled" and '"once"' in e.get("schema", "")]
    assert len(compiles) == 1


@pytest.mark.parametrize("body, says", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
     "JSON schema cannot be used"),
    ({"response_format": {"type": "json_schema"}}, "json_schema needs json_schema"),
    ({"response_format": {"type": "json_object"}, "ignore_eos": True}, "cannot be combined with ignore_eos"),
    ({"response_format": {"type": "yaml"}}, "json_schema"),
])
def test_bad_structured_requests_are_refused(worker_pool, llama_dir, body, says):
    srv = worker(worker_pool, llama_dir, "dynamic")
    r = post(srv, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 5, **body})
    assert r.status_code == 400 and says in r.json()["error"]["message"], r.text


def test_continuous_mode_refuses_per_row_masks_naming_the_mode(worker_pool, llama_dir):
    srv = worker(worker_pool, llama_dir, "continuous")
    for body in ({"response_format": {"type": "json_object"}}, {"logprobs": True}, {"logit_bias": {"5": 3}}):
        r = post(srv, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 5, **body})
        message = r.json()["error"]["message"]
        assert r.status_code == 400 and "batching mode 'continuous'" in message and "'dynamic'" in message, r.text
    r = post(srv, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 3, "n": 2, "temperature": 0})
    assert r.status_code == 200 and len(r.json()["choices"]) == 2  # n alone is served there


def test_numbers_without_bounds_end_within_the_grammars_digit_caps(worker_pool, llama_dir):
    """A model that would write digits forever ("1" biased far above every other token) still
    closes a number whose schema sets no bounds: the grammar caps its digit runs, so the reply
    ends and validates instead of running to max_tokens."""
    import re

    from transformers import AutoTokenizer

    from engine.runtime.grammar import MAX_EXPONENT_DIGITS, MAX_FRACTION_DIGITS, MAX_INTEGER_DIGITS

    [one] = AutoTokenizer.from_pretrained(llama_dir).encode("1", add_special_tokens=False)
    schema = {"type": "object", "properties": {"x": {"type": "number"}, "n": {"type": "integer"}},
              "required": ["x", "n"], "additionalProperties": False}
    srv = worker(worker_pool, llama_dir, "dynamic")
    r = post(srv, "/v1/completions", {"prompt": "Numbers:", "max_tokens": 150, "temperature": 0,
                                      "logit_bias": {str(one): 100}, "guided_json": schema})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    text = choice["text"]
    jsonschema.validate(json.loads(text), schema)
    x = re.search(r'"x": (-?)(\d+)(?:\.(\d+))?(?:[eE][+-]?(\d+))?', text)
    n = re.search(r'"n": (-?\d+)', text)
    assert len(x.group(2)) <= MAX_INTEGER_DIGITS and len(x.group(3) or "") <= MAX_FRACTION_DIGITS, text
    assert len(x.group(4) or "") <= MAX_EXPONENT_DIGITS and len(n.group(1).lstrip("-")) <= MAX_INTEGER_DIGITS, text
    assert "1" * MAX_INTEGER_DIGITS in text, f"the bias did not make the model write long numbers: {text}"


@pytest.mark.parametrize("string_schema", [{"type": "string"}, {"type": "string", "maxLength": 4}])
def test_strings_take_only_valid_utf8_json_characters(tokenizer_dir, string_schema):
    """The grammar of a JSON string refuses a raw control character and the UTF-8 bytes of a
    UTF-16 surrogate (ED A0 80: no valid UTF-8; a tiny random model wrote them and its reply
    decoded to three U+FFFD), and takes the characters just beside them."""
    from transformers import AutoTokenizer

    from engine.requests import Constraint
    from engine.runtime.grammar import GrammarCache

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    cache = GrammarCache(tokenizer, len(tokenizer), (tokenizer.eos_token_id,))
    compiled = cache.compile(Constraint("json_schema", json.dumps(string_schema)))

    def takes(text: bytes) -> bool:
        return cache.matcher(compiled).matcher.accept_string(b'"' + text + b'"')

    assert takes("\ud7ff\ue000é".encode()) and takes(b"ab")
    assert not takes("\ud800".encode("utf-8", "surrogatepass"))
    assert not takes("\udfff".encode("utf-8", "surrogatepass"))
    assert not takes(b"a\tb")
