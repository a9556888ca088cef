"""Run by vLLM's own Python (``.venv-vllm``, ``make vllm``): parse an exported YAML with the parser
``vllm serve`` builds, validate it as ``vllm serve`` does, turn it into vLLM's engine arguments, and
print them as JSON, for each file and its command line (one vLLM start-up for all). Not a test module: test_export_vllm.py
runs it in that environment.

    python vllm_parse_check.py FILE.yaml 'vllm serve … command line' [FILE.yaml 'vllm serve …' …]
"""

import argparse
import dataclasses
import json
import shlex
import sys

FIELDS = ("model", "served_model_name", "dtype", "max_model_len", "max_num_seqs", "max_num_batched_tokens",
          "enable_prefix_caching", "kv_offloading_size", "kv_offloading_backend", "gpu_memory_utilization",
          "tensor_parallel_size", "pipeline_parallel_size", "distributed_executor_backend", "block_size",
          "num_gpu_blocks_override", "trust_remote_code")
SERVER_FIELDS = ("host", "port", "uvicorn_log_level", "api_key")


def parse(argv):
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description="vLLM CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    serve = ServeSubcommand()
    serve.subparser_init(subparsers)
    args = parser.parse_args(argv)
    serve.validate(args)
    if getattr(args, "model_tag", None) is not None:
        args.model = args.model_tag
    engine = AsyncEngineArgs.from_cli_args(args)
    out = {name: getattr(engine, name) for name in FIELDS}
    out.update({name: getattr(args, name, None) for name in SERVER_FIELDS})
    return {k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v)) for k, v in out.items()}


def main():
    results = []
    pairs = sys.argv[1:]
    for yaml_file, command in zip(pairs[::2], pairs[1::2]):
        words = shlex.split(command)
        assert words[:2] == ["vllm", "serve"], words
        results.append({"config": parse(["serve", "--config", yaml_file]), "command": parse(words[1:])})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
