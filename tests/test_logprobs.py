"""Log-probabilities, echo, several choices and logit_bias on a real engine, checked against a
log-softmax of transformers' own ``model(...)`` logits on the same tokens.

Tolerance: 1e-4 absolute. The engine computes the logits in a batch (KV cache, one step at a
time) and the reference in one forward pass over the whole sequence, both in float32; the two
differ by float rounding only (observed below 1e-5 on the tiny model).
"""

import httpx
import pytest

TOLERANCE = 1e-4
MODES = ["dynamic", "sequential"]
PROMPT = "The capital of France is"


def worker(worker_pool, llama_dir, mode):
    # The same arguments as test_batching's workers: the session shares them.
    return worker_pool.get(llama_dir, "--batching-mode", mode, "--max-wait-ms", "300")


def post(srv, path, body):
    r = httpx.post(srv.url + path, headers=srv.headers, timeout=120, json={"model": "tiny-llama", **body})
    assert r.status_code == 200, r.text
    return r.json()


def token_ids(names):
    return [int(name.removeprefix("token_id:")) for name in names]


def reference_logprobs(greedy_reference, llama_dir, ids):
    """log-softmax of ``model(ids)``: row i is the distribution of token i + 1."""
    import torch

    tokenizer, model = greedy_reference._load(str(llama_dir))
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1), tokenizer


@pytest.mark.parametrize("mode", MODES)
def test_completion_logprobs_equal_a_log_softmax_of_the_models_logits(worker_pool, llama_dir, greedy_reference,
                                                                      mode):
    srv = worker(worker_pool, llama_dir, mode)
    body = post(srv, "/v1/completions", {"prompt": PROMPT, "max_tokens": 10, "temperature": 0, "logprobs": 5,
                                         "ignore_eos": True, "return_tokens_as_token_ids": True})
    logprobs = body["choices"][0]["logprobs"]
    generated = token_ids(logprobs["tokens"])
    _, tokenizer = reference_logprobs(greedy_reference, llama_dir, [0])
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    reference, _ = reference_logprobs(greedy_reference, llama_dir, prompt_ids + generated)
    for place, token in enumerate(generated):
        row = reference[len(prompt_ids) - 1 + place]
        assert abs(logprobs["token_logprobs"][place] - float(row[token])) < TOLERANCE
        top = logprobs["top_logprobs"][place]
        values, ids = row.topk(5)
        assert token_ids(top) == ids.tolist()
        assert all(abs(a - b) < TOLERANCE for a, b in zip(top.values(), values.tolist()))
    assert generated[0] == int(reference[len(prompt_ids) - 1].argmax())  # greedy took the best


@pytest.mark.parametrize("mode", MODES)
def test_echo_with_logprobs_gives_the_prompts_loglikelihood(worker_pool, llama_dir, greedy_reference, mode):
    srv = worker(worker_pool, llama_dir, mode)
    body = post(srv, "/v1/completions", {"prompt": PROMPT, "max_tokens": 1, "temperature": 0, "logprobs": 1,
                                         "echo": True, "return_tokens_as_token_ids": True})
    choice = body["choices"][0]
    assert choice["text"].startswith(PROMPT)
    logprobs = choice["logprobs"]
    _, tokenizer = reference_logprobs(greedy_reference, llama_dir, [0])
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    ids = token_ids(logprobs["tokens"])
    assert ids[:len(prompt_ids)] == prompt_ids and len(ids) == len(prompt_ids) + 1
    reference, _ = reference_logprobs(greedy_reference, llama_dir, ids)
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    for place in range(1, len(ids)):
        assert abs(logprobs["token_logprobs"][place] - float(reference[place - 1][ids[place]])) < TOLERANCE


def test_chat_logprobs_streamed_equal_the_whole_reply(worker_pool, llama_dir):
    from openai import OpenAI

    srv = worker(worker_pool, llama_dir, "dynamic")
    client = OpenAI(base_url=srv.url + "/v1", api_key=srv.api_key, max_retries=0, timeout=60)
    kwargs = dict(model="tiny-llama", messages=[{"role": "user", "content": "Hello"}], max_tokens=12,
                  temperature=0, logprobs=True, top_logprobs=3)
    whole = client.chat.completions.create(**kwargs).choices[0]
    streamed = []
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
            streamed.extend(chunk.choices[0].logprobs.content)
    assert [e.token for e in streamed] == [e.token for e in whole.logprobs.content]
    assert [round(e.logprob, 5) for e in streamed] == [round(e.logprob, 5) for e in whole.logprobs.content]
    assert all(len(e.top_logprobs) == 3 for e in whole.logprobs.content)
    # Tokens may split a character (their text shows U+FFFD); their bytes join into the reply.
    assert b"".join(bytes(e.bytes) for e in whole.logprobs.content).decode("utf-8", "replace") == \
        whole.message.content


@pytest.mark.parametrize("mode", MODES)
def test_n_choices_with_a_seed_are_reproducible(worker_pool, llama_dir, mode):
    srv = worker(worker_pool, llama_dir, mode)
    request = {"prompt": "Hello", "max_tokens": 12, "temperature": 1.0, "seed": 7, "n": 3, "ignore_eos": True}
    first = [c["text"] for c in post(srv, "/v1/completions", request)["choices"]]
    again = post(srv, "/v1/completions", request)
    assert [c["text"] for c in again["choices"]] == first
    assert [c["index"] for c in again["choices"]] == [0, 1, 2]
    assert len(set(first)) > 1, "the choices are copies of one another"
    assert again["usage"]["completion_tokens"] == 36


def test_n_choices_stream_and_sum_their_usage(worker_pool, llama_dir, greedy_reference):
    from openai import OpenAI

    srv = worker(worker_pool, llama_dir, "dynamic")
    client = OpenAI(base_url=srv.url + "/v1", api_key=srv.api_key, max_retries=0, timeout=60)
    texts = {0: "", 1: "", 2: ""}
    usage = None
    for chunk in client.completions.create(model="tiny-llama", prompt=PROMPT, max_tokens=8, temperature=0, n=3,
                                           stream=True, stream_options={"include_usage": True},
                                           extra_body={"ignore_eos": True}):
        for choice in chunk.choices:
            texts[choice.index] += choice.text
        usage = chunk.usage or usage
    expected = greedy_reference(llama_dir, PROMPT, 8)
    assert list(texts.values()) == [expected] * 3  # greedy: three rows, one answer
    assert usage.completion_tokens == 24 and usage.prompt_tokens < 24


def test_logit_bias_forces_and_forbids_tokens(worker_pool, llama_dir, greedy_reference):
    srv = worker(worker_pool, llama_dir, "dynamic")
    plain = post(srv, "/v1/completions", {"prompt": PROMPT, "max_tokens": 4, "temperature": 0, "logprobs": 0,
                                          "return_tokens_as_token_ids": True})
    first = token_ids(plain["choices"][0]["logprobs"]["tokens"])[0]
    banned = post(srv, "/v1/completions", {"prompt": PROMPT, "max_tokens": 4, "temperature": 0, "logprobs": 0,
                                           "return_tokens_as_token_ids": True, "logit_bias": {str(first): -100}})
    assert token_ids(banned["choices"][0]["logprobs"]["tokens"])[0] != first
    forced = post(srv, "/v1/completions", {"prompt": PROMPT, "max_tokens": 4, "temperature": 0, "logprobs": 0,
                                           "ignore_eos": True, "return_tokens_as_token_ids": True,
                                           "logit_bias": {"42": 100}})
    assert token_ids(forced["choices"][0]["logprobs"]["tokens"]) == [42] * 4


@pytest.mark.parametrize("path, body, says", [
    ("/v1/completions", {"prompt": "Hi", "echo": True, "stream": True}, "echo is supported on non-streamed"),
    ("/v1/completions", {"prompt": "Hi", "logprobs": 21}, "less than or equal to 20"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "top_logprobs": 2},
     "top_logprobs needs logprobs: true"),
    ("/v1/completions", {"prompt": "Hi", "n": 9}, "less than or equal to 8"),
    ("/v1/completions", {"prompt": "Hi", "logit_bias": {"x": 1}}, "logit_bias keys are token ids"),
    ("/v1/completions", {"prompt": "Hi", "logit_bias": {"5": 101}}, "logit_bias values lie in -100..100"),
    ("/v1/completions", {"prompt": "Hi", "logit_bias": {"999999": 1}}, "the model's vocabulary has"),
])
def test_unsupported_combinations_are_refused(worker_pool, llama_dir, path, body, says):
    srv = worker(worker_pool, llama_dir, "dynamic")
    r = httpx.post(srv.url + path, headers=srv.headers, timeout=60,
                   json={"model": "tiny-llama", "max_tokens": 2, **body})
    assert r.status_code == 400 and says in r.json()["error"]["message"], r.text
