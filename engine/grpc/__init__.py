"""deepseek.v1.Inference: the worker's gRPC face (proto, generated modules, servicer).

``inference.proto`` is the source; ``inference_pb2*.py(i)`` are generated from it and checked in
(tests/test_grpc.py regenerates them and compares). ``engine.grpc.server`` serves it on the same
engine, scheduler, keys, limits and circuit breaker as the REST API.
"""
