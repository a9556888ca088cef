"""The HTTP API's request and response models (torch-free; the GUI and tests import them too).

One module per area; every name is importable from ``engine.protocol`` as before:

- ``openai_requests``: chat and text completion requests and their sampling fields
- ``openai_responses``: completions, stream chunks and the model list, in OpenAI's shapes
- ``errors``: the error body every 4xx and 5xx carries
- ``admin``: health, load/unload, configuration, status and engine events
- ``response_base``: the base every response builds on, ids and timestamps
"""

from engine.protocol.admin import (
    AdminStatus,
    BatchLimitStatus,
    CircuitStatus,
    ConfigChanges,
    EngineEvent,
    Health,
    KeyRateLimit,
    LoadAccepted,
    LoadCancelled,
    LoadRequest,
    PublicConfig,
    PublicKey,
    PublicServerConfig,
    ServerChanges,
    Unloaded,
)
from engine.protocol.errors import ErrorDetail, ErrorResponse
from engine.protocol.openai_requests import (
    MAX_STOP_SEQUENCES,
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    SamplingFields,
    StreamOptions,
    TextPart,
)
from engine.protocol.openai_responses import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatDelta,
    Completion,
    CompletionChunk,
    FinishReason,
    ModelCard,
    ModelList,
    TextChoice,
    TextChunkChoice,
    Usage,
)
from engine.protocol.response_base import ResponseModel, new_id, now

__all__ = [
    "AdminStatus", "AssistantMessage", "BatchLimitStatus", "ChatChoice", "ChatChunkChoice", "ChatCompletion",
    "ChatCompletionChunk", "ChatCompletionRequest", "ChatDelta", "ChatMessage", "CircuitStatus", "Completion",
    "CompletionChunk", "CompletionRequest", "ConfigChanges", "EngineEvent", "ErrorDetail", "ErrorResponse",
    "FinishReason", "Health", "KeyRateLimit", "LoadAccepted", "LoadCancelled", "LoadRequest", "MAX_STOP_SEQUENCES",
    "ModelCard", "ModelList", "PublicConfig", "PublicKey", "PublicServerConfig", "ResponseModel", "SamplingFields",
    "ServerChanges", "StreamOptions", "TextChoice", "TextChunkChoice", "TextPart", "Unloaded", "Usage", "new_id",
    "now",
]
