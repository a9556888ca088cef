"""Routes by area: ``openai`` (the OpenAI-compatible API), ``admin`` (load, unload, settings,
events), ``health`` (liveness and metrics); search and gRPC take their place beside them."""
