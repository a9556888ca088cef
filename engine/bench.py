"""Load generator for any OpenAI-compatible server (torch-free; httpx only).

For each concurrency level, ``requests`` streaming completions are sent by that many concurrent
clients; every token's arrival time is recorded, from which come time to first token (TTFT),
inter-token latency (ITL), end-to-end latency (E2E), request throughput and output tokens/s.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import httpx

from engine.service.errors import GRPC_CODES

PERCENTILES = (50, 90, 99)


@dataclass
class RequestResult:
    status: int
    started: float
    first_token: Optional[float] = None
    finished: Optional[float] = None
    token_times: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    prompt_tokens: int = 0
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


@dataclass
class LevelReport:
    concurrency: int
    requests: int
    ok: int
    duration_s: float
    request_throughput: float
    output_tokens_per_s: float
    prompt_tokens_mean: float
    ttft_s: dict[str, Optional[float]]
    itl_s: dict[str, Optional[float]]
    e2e_s: dict[str, Optional[float]]
    errors: dict[str, int]

    def row(self) -> dict:
        flat = {k: v for k, v in asdict(self).items() if not isinstance(v, dict)}
        for name in ("ttft_s", "itl_s", "e2e_s"):
            for pct, value in getattr(self, name).items():
                flat[f"{name[:-2]}_{pct}_s"] = value
        flat["errors"] = ";".join(f"{k}:{v}" for k, v in sorted(self.errors.items()))
        return flat


def percentiles(values: list[float]) -> dict[str, Optional[float]]:
    if not values:
        return {f"p{p}": None for p in PERCENTILES}
    ordered = sorted(values)
    out = {}
    for p in PERCENTILES:  # nearest-rank
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
        out[f"p{p}"] = ordered[index]
    return out


_WORDS = ("the of and to in is was for on that with as by at from his her they have this are which "
          "one you had not but what all were when we there can an your their said if do will each about "
          "how up out them then she many some so these would other into has more two time could no way "
          "my than first been call who its now find long down day did get come made may part over new "
          "sound take only little work know place year live me back give most very after thing our just "
          "name good sentence man think say great where help through much before line right too mean old "
          "any same tell boy follow came want show also around form three small set put end does another "
          "well large must big even such because turn here why ask went men read need land different home "
          "us move try kind hand picture again change off play spell air away animal house point page").split()


def make_prompt(tokens: int, shared_prefix_tokens: int, index: int) -> str:
    """Common English words (about one token each for real tokenizers); the server's usage
    reports the real count. Requests differ after the shared prefix (index past the word list's
    length changes the step between words too, so no two indexes repeat a prompt)."""
    shared = " ".join(_WORDS[(i * 7) % len(_WORDS)] for i in range(shared_prefix_tokens))
    step = 31 + index // len(_WORDS)
    own = " ".join(_WORDS[(index * 7919 + i * step) % len(_WORDS)] for i in range(max(1, tokens - shared_prefix_tokens)))
    return (shared + " " + own).strip()


async def _one_request(client: httpx.AsyncClient, url: str, headers: dict, body: dict) -> RequestResult:
    result = RequestResult(status=0, started=time.perf_counter())
    try:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            result.status = response.status_code
            if response.status_code != 200:
                await response.aread()
                result.error = response.text[:200]
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    result.error = data["error"].get("message", "error")
                    break
                if data.get("usage"):
                    result.completion_tokens = data["usage"]["completion_tokens"]
                    result.prompt_tokens = data["usage"]["prompt_tokens"]
                for choice in data.get("choices", []):
                    if choice.get("text"):
                        now = time.perf_counter()
                        result.first_token = result.first_token or now
                        result.token_times.append(now)
    except httpx.HTTPError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.finished = time.perf_counter()
    if not result.completion_tokens:  # a server that does not send usage: count chunks
        result.completion_tokens = len(result.token_times)
    return result


async def _one_grpc_request(stub, metadata, body: dict) -> RequestResult:
    """The same request over gRPC (deepseek.v1.Inference/Generate): chunks with text are tokens
    arriving; the last chunk's usage is the count."""
    import grpc

    from engine.grpc import inference_pb2 as pb

    result = RequestResult(status=0, started=time.perf_counter())
    request = pb.GenerateRequest(model=body["model"], prompt=body["prompt"], max_tokens=body["max_tokens"],
                                 temperature=body["temperature"], ignore_eos=body["ignore_eos"])
    try:
        async for chunk in stub.Generate(request, metadata=metadata):
            if chunk.text:
                now = time.perf_counter()
                result.first_token = result.first_token or now
                result.token_times.append(now)
            if chunk.finish_reason:
                result.completion_tokens = chunk.usage.completion_tokens
                result.prompt_tokens = chunk.usage.prompt_tokens
        result.status = 200
    except grpc.aio.AioRpcError as exc:
        result.status = GRPC_AS_HTTP.get(exc.code().name, 500)
        result.error = f"{exc.code().name}: {exc.details()}"[:200]
    finally:
        result.finished = time.perf_counter()
    if not result.completion_tokens:
        result.completion_tokens = len(result.token_times)
    return result


# gRPC failures in the same table as REST's (errors by status): the service's map, read backwards.
GRPC_AS_HTTP = {code: status for status, code in GRPC_CODES.items()}


async def run_level(url: str, api_key: Optional[str], model: str, concurrency: int, requests: int,
                    prompt_tokens: int, output_tokens: int, shared_prefix_tokens: int = 0,
                    progress: Optional[Callable[[int, int], None]] = None,
                    seconds: Optional[float] = None, first_index: int = 0,
                    protocol: str = "rest", grpc_target: Optional[str] = None) -> LevelReport:
    """``requests`` requests from ``concurrency`` clients; with ``seconds``, no request starts
    after that many seconds (``requests`` is then a cap). Prompts are ``make_prompt``'s from
    ``first_index`` on: a sweep gives each point its own, so none reuses another's prefix KV.
    ``protocol`` "grpc" sends the same requests to deepseek.v1.Inference/Generate at
    ``grpc_target`` (host:port) instead of streaming ``/v1/completions`` at ``url``."""
    if protocol == "grpc":
        import grpc

        from engine.grpc import inference_pb2_grpc as pb_grpc

        metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        async with grpc.aio.insecure_channel(grpc_target or url) as channel:
            stub = pb_grpc.InferenceStub(channel)
            return await _drive(lambda body: _one_grpc_request(stub, metadata, body), model, concurrency, requests,
                                prompt_tokens, output_tokens, shared_prefix_tokens, progress, seconds, first_index)
    endpoint = url.rstrip("/") + "/v1/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=600), limits=limits) as client:
        return await _drive(lambda body: _one_request(client, endpoint, headers, body), model, concurrency, requests,
                            prompt_tokens, output_tokens, shared_prefix_tokens, progress, seconds, first_index)


async def _drive(send, model: str, concurrency: int, requests: int, prompt_tokens: int, output_tokens: int,
                 shared_prefix_tokens: int, progress, seconds: Optional[float], first_index: int) -> LevelReport:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(first_index, first_index + requests):
        queue.put_nowait(i)
    results: list[RequestResult] = []

    async def worker():
        while not queue.empty():
            if deadline is not None and time.perf_counter() >= deadline:
                break
            i = queue.get_nowait()
            body = {"model": model, "prompt": make_prompt(prompt_tokens, shared_prefix_tokens, i),
                    "max_tokens": output_tokens, "temperature": 0, "stream": True, "ignore_eos": True,
                    "stream_options": {"include_usage": True}}
            results.append(await send(body))
            if progress:
                progress(len(results), requests)

    started = time.perf_counter()
    deadline = started + seconds if seconds is not None else None
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    duration = time.perf_counter() - started
    return summarize(concurrency, results, duration)


def first_grpc_model(target: str, api_key: Optional[str]) -> str:
    import grpc

    from engine.grpc import inference_pb2 as pb
    from engine.grpc import inference_pb2_grpc as pb_grpc

    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    with grpc.insecure_channel(target) as channel:
        models = pb_grpc.InferenceStub(channel).ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=30).models
    if not models:
        raise RuntimeError(f"{target} serves no model")
    return models[0].id


def summarize(concurrency: int, results: list[RequestResult], duration: float) -> LevelReport:
    ok = [r for r in results if r.ok]
    itl = [b - a for r in ok for a, b in zip(r.token_times, r.token_times[1:])]
    errors = Counter(str(r.status or "connection") for r in results if not r.ok)
    return LevelReport(
        concurrency=concurrency, requests=len(results), ok=len(ok), duration_s=duration,
        request_throughput=len(ok) / duration if duration else 0.0,
        output_tokens_per_s=sum(r.completion_tokens for r in ok) / duration if duration else 0.0,
        prompt_tokens_mean=statistics.mean(r.prompt_tokens for r in ok) if ok else 0.0,
        ttft_s=percentiles([r.first_token - r.started for r in ok if r.first_token]),
        itl_s=percentiles(itl),
        e2e_s=percentiles([r.finished - r.started for r in ok]),
        errors=dict(errors),
    )


def first_model(url: str, api_key: Optional[str]) -> str:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    data = httpx.get(url.rstrip("/") + "/v1/models", headers=headers, timeout=30).json().get("data") or []
    if not data:
        raise RuntimeError(f"{url} serves no model")
    return data[0]["id"]


def progress_bar(label: str) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // total
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return show


def format_table(reports: list[LevelReport], baseline: Optional[dict] = None) -> str:
    def ms(value: Optional[float]) -> str:
        return "   N/A" if value is None else f"{value * 1000:6.0f}"

    lines = ["conc  ok/req    req/s   tok/s  ratio  TTFT p50/p90/p99 ms   ITL p50/p90/p99 ms    E2E p50/p99 ms  errors"]
    ref = (baseline or {}).get("sequential_tokens_per_s")
    for r in reports:
        ratio = f"{r.output_tokens_per_s / ref:5.2f}x" if ref else "   - "
        lines.append(
            f"{r.concurrency:4d} {r.ok:3d}/{r.requests:<3d} {r.request_throughput:7.2f} {r.output_tokens_per_s:7.1f} {ratio} "
            f"{ms(r.ttft_s['p50'])}/{ms(r.ttft_s['p90'])}/{ms(r.ttft_s['p99'])} "
            f"{ms(r.itl_s['p50'])}/{ms(r.itl_s['p90'])}/{ms(r.itl_s['p99'])} "
            f"{ms(r.e2e_s['p50'])}/{ms(r.e2e_s['p99'])}  {r.errors or ''}")
    if baseline:
        lines.append(f"baseline (in-process, same model): generate one at a time "
                     f"{baseline['sequential_tokens_per_s']:.1f} tok/s; static batch of {baseline['batch']} "
                     f"{baseline['static_batch_tokens_per_s']:.1f} tok/s")
    return "\n".join(lines)
