"""gRPC beside REST: a real grpcio client against a real worker serving both.

deepseek.v1.Inference answers what REST answers (greedy text and tokens alike), refuses with the
gRPC code matching REST's status and the same message, frees a batch slot when its client
cancels, and grpc.health.v1 follows /health. Regenerating the checked-in modules from the proto
gives the same files.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from engine.grpc import inference_pb2 as pb
from engine.grpc import inference_pb2_grpc as pb_grpc
from helpers import EngineServer, wait_until

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py")
MONITOR_KEY = "monitor-key-1"
LIMITED_KEY = "limited-key-1"


def test_regenerating_from_the_proto_gives_the_checked_in_modules(tmp_path):
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT), f"--python_out={tmp_path}",
                    f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", "engine/grpc/inference.proto"],
                   check=True, cwd=ROOT)
    for name in GENERATED:
        fresh = (tmp_path / "engine" / "grpc" / name).read_text()
        assert fresh == (ROOT / "engine" / "grpc" / name).read_text(), (
            f"engine/grpc/{name} is not what the proto generates: regenerate it (see inference.proto's header)")


@pytest.fixture(scope="module")
def grpc_worker(llama_dir):
    config = f"""
[server]
grpc_port = 0
[[server.keys]]
name = "watch"
key_sha256 = "{hashlib.sha256(MONITOR_KEY.encode()).hexdigest()}"
role = "monitor"
[[server.keys]]
name = "limited"
key = "{LIMITED_KEY}"
role = "inference"
rate_limit = {{ requests_per_s = 0.05, burst = 1 }}
"""
    with EngineServer(llama_dir, config=config) as srv:
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}")
        srv.grpc_channel = channel
        yield srv
        channel.close()


@pytest.fixture
def stub(grpc_worker):
    return pb_grpc.InferenceStub(grpc_worker.grpc_channel)


def auth(key: str = "test-key"):
    return (("authorization", f"Bearer {key}"),)


def rest(srv, path, body, key="test-key"):
    return httpx.post(srv.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if not isinstance(result, pb.ListModelsResponse):
            list(result)
    return info.value


def test_list_models_names_the_served_model(stub, grpc_worker):
    models = stub.ListModels(pb.ListModelsRequest(), metadata=auth()).models
    rest_models = httpx.get(grpc_worker.url + "/v1/models", headers=grpc_worker.headers).json()["data"]
    assert [(m.id, m.max_model_len) for m in models] == [(m["id"], m["max_model_len"]) for m in rest_models]


def test_greedy_generate_and_chat_equal_rest(stub, grpc_worker):
    chunks = list(stub.Generate(pb.GenerateRequest(model="tiny-llama", prompt="The capital of France is",
                                                   max_tokens=12, temperature=0), metadata=auth()))
    body = rest(grpc_worker, "/v1/completions", {"model": "tiny-llama", "prompt": "The capital of France is",
                                                 "max_tokens": 12, "temperature": 0}).json()
    assert "".join(c.text for c in chunks) == body["choices"][0]["text"]
    last = chunks[-1]
    assert last.finish_reason == body["choices"][0]["finish_reason"]
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"])
    assert sum(len(c.token_ids) for c in chunks) == last.usage.completion_tokens

    messages = [pb.Message(role="user", content="Hello there")]
    chat = list(stub.Chat(pb.ChatRequest(model="tiny-llama", messages=messages, max_tokens=10, temperature=0),
                          metadata=auth()))
    reply = rest(grpc_worker, "/v1/chat/completions", {"model": "tiny-llama", "max_tokens": 10, "temperature": 0,
                                                       "messages": [{"role": "user", "content": "Hello there"}]}).json()
    message = reply["choices"][0]["message"]
    assert "".join(c.text for c in chat) == message["content"]
    assert "".join(c.reasoning_text for c in chat) == (message.get("reasoning_content") or "")
    assert grpc_worker.metric("engine_requests_total", {"protocol": "grpc", "outcome": "length"}) >= 2
    assert grpc_worker.metric("engine_requests_total", {"protocol": "rest", "outcome": "length"}) >= 2


def test_bench_drives_grpc_with_the_same_report_as_rest(grpc_worker):
    """`deepseek-engine bench --protocol grpc`: the same workload and report as REST's, refusals
    counted under REST's status."""
    import asyncio

    from engine import bench

    target = f"127.0.0.1:{grpc_worker.grpc_port}"
    runs = {protocol: asyncio.run(bench.run_level(grpc_worker.url, "test-key", "tiny-llama", 2, 4, 16, 6,
                                                  protocol=protocol, grpc_target=target))
            for protocol in ("rest", "grpc")}
    for report in runs.values():
        assert (report.requests, report.ok, report.errors) == (4, 4, {})
        assert report.output_tokens_per_s * report.duration_s == pytest.approx(4 * 6)
        assert report.ttft_s["p50"] > 0
    refused = asyncio.run(bench.run_level(grpc_worker.url, "wrong-key", "tiny-llama", 2, 2, 16, 6,
                                          protocol="grpc", grpc_target=target))
    assert (refused.ok, refused.errors) == (0, {"401": 2})


def test_a_cancelled_stream_frees_its_slot_before_the_next_token(stub, grpc_worker):
    call = stub.Generate(pb.GenerateRequest(model="tiny-llama", prompt="Hi", max_tokens=250, ignore_eos=True,
                                            temperature=0), metadata=auth())
    first = next(call)
    assert first.token_ids
    call.cancel()
    assert wait_until(lambda: grpc_worker.metric("engine_requests_running") == 0, 10), \
        "the cancelled generation still holds its slot"
    assert grpc_worker.metric("engine_requests_total", {"protocol": "grpc", "outcome": "cancelled"}) >= 1


def test_each_refusal_has_rests_message_under_the_matching_code(stub, grpc_worker):
    # INVALID_ARGUMENT <- 400
    error = rpc_error(lambda: stub.Generate(pb.GenerateRequest(model="tiny-llama", prompt="Hi", temperature=5.0),
                                            metadata=auth()))
    r = rest(grpc_worker, "/v1/completions", {"model": "tiny-llama", "prompt": "Hi", "temperature": 5.0})
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and r.status_code == 400
    assert error.details() == r.json()["error"]["message"]
    # NOT_FOUND <- 404
    error = rpc_error(lambda: stub.Chat(pb.ChatRequest(model="nope", messages=[pb.Message(role="user", content="x")]),
                                        metadata=auth()))
    r = rest(grpc_worker, "/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert error.code() == grpc.StatusCode.NOT_FOUND and r.status_code == 404
    assert error.details() == r.json()["error"]["message"]
    # UNAUTHENTICATED <- 401
    error = rpc_error(lambda: stub.ListModels(pb.ListModelsRequest(), metadata=auth("wrong")))
    r = httpx.get(grpc_worker.url + "/v1/models", headers={"Authorization": "Bearer wrong"})
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED and r.status_code == 401
    assert error.details() == r.json()["error"]["message"]
    assert rpc_error(lambda: stub.ListModels(pb.ListModelsRequest())).code() == grpc.StatusCode.UNAUTHENTICATED
    # PERMISSION_DENIED <- 403: a monitor key lists models but may not generate
    assert stub.ListModels(pb.ListModelsRequest(), metadata=auth(MONITOR_KEY)).models
    error = rpc_error(lambda: stub.Generate(pb.GenerateRequest(model="tiny-llama", prompt="Hi"),
                                            metadata=auth(MONITOR_KEY)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'watch' has role 'monitor'" in error.details()
    # RESOURCE_EXHAUSTED <- 429, with the retry delay
    stub.ListModels(pb.ListModelsRequest(), metadata=auth(LIMITED_KEY))
    error = rpc_error(lambda: stub.ListModels(pb.ListModelsRequest(), metadata=auth(LIMITED_KEY)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailing = dict(error.trailing_metadata())
    assert int(trailing["retry-after"]) >= 1 and trailing["x-ratelimit-remaining-requests"] == "0"
    r = httpx.get(grpc_worker.url + "/v1/models", headers={"Authorization": f"Bearer {LIMITED_KEY}"})
    assert r.status_code == 429 and r.headers["retry-after"]
    assert error.details().split(";")[0] == r.json()["error"]["message"].split(";")[0]
    assert grpc_worker.metric("engine_rate_limited_total", {"key": "limited"}) >= 2


def test_deadline_exceeded_for_a_request_past_its_timeout(stub, grpc_worker):
    put = lambda seconds: httpx.put(grpc_worker.url + "/admin/config", headers=grpc_worker.headers,
                                    json={"batching": {"request_timeout_s": seconds}}, timeout=30)
    assert put(0.05).status_code == 200
    try:
        error = rpc_error(lambda: stub.Generate(pb.GenerateRequest(model="tiny-llama", prompt="Hi", max_tokens=250,
                                                                   ignore_eos=True), metadata=auth()))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "request ran past batching.request_timeout_s" in error.details()
    finally:
        assert put(600).status_code == 200


def test_reflection_lists_the_services_and_their_messages(grpc_worker):
    stub = reflection_pb2_grpc.ServerReflectionStub(grpc_worker.grpc_channel)
    answers = list(stub.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="deepseek.v1.Inference")])))
    services = {s.name for s in answers[0].list_services_response.service}
    assert {"deepseek.v1.Inference", "grpc.health.v1.Health"} <= services
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.FileDescriptorProto.FromString(answers[1].file_descriptor_response.file_descriptor_proto[0])
    fields = {m.name: [f.name for f in m.field] for m in proto.message_type}
    assert {"model", "messages", "max_tokens", "temperature", "top_p", "stop", "seed"} <= set(fields["ChatRequest"])
    assert {"text", "token_ids", "reasoning_text", "finish_reason", "usage"} <= set(fields["Chunk"])
    assert fields["Usage"] == ["prompt_tokens", "completion_tokens"]
    assert [m.name for m in proto.service[0].method] == ["Generate", "Chat", "ListModels"]


def test_health_follows_rest_health_and_unavailable_has_rests_message(stub, grpc_worker):
    """Last in the module: it unloads the model."""
    health = health_pb2_grpc.HealthStub(grpc_worker.grpc_channel)
    for service in ("", "deepseek.v1.Inference"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    assert httpx.post(grpc_worker.url + "/admin/unload", headers=grpc_worker.headers, timeout=60).status_code == 200
    assert httpx.get(grpc_worker.url + "/health").status_code == 503
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()
    error = rpc_error(lambda: stub.Generate(pb.GenerateRequest(model="tiny-llama", prompt="Hi"), metadata=auth()))
    r = rest(grpc_worker, "/v1/completions", {"model": "tiny-llama", "prompt": "Hi"})
    assert error.code() == grpc.StatusCode.UNAVAILABLE and r.status_code == 503
    assert error.details() == r.json()["error"]["message"]

