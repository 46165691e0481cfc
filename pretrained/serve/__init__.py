"""`pretrained serve`: an HTTP inference server that OpenAI and text-embeddings-inference clients talk to.

    app.py       the routes (OpenAI /v1/embeddings, /v1/completions, /v1/chat/completions; TEI /embed,
                 /rerank, /predict; /health, /info, /v1/models, /metrics), auth, limits and JSON errors
    engine.py    the batching scheduler: one model thread, dynamic batches, continuous batching for generation
    protocol.py  the request bodies
    service.py   the checkpoint loaded for what it is (embedding model, cross-encoder, classifier, causal LM)

FastAPI, uvicorn and prometheus_client come with the optional extra: `pip install "pretrained[serve]"`.
"""
from __future__ import annotations

from typing import Optional

EXTRA_HINT = 'pretrained serve needs FastAPI, uvicorn and prometheus_client: pip install "pretrained[serve]"'

try:
    import fastapi  # noqa: F401
    import prometheus_client  # noqa: F401
    import uvicorn
except ImportError as e:  # the optional extra is missing
    raise ImportError(f"{EXTRA_HINT} ({e})") from e

from .app import Limits, create_app  # noqa: E402
from .service import load  # noqa: E402

__all__ = ["Limits", "create_app", "load", "serve"]


def serve(model: str, host: str = "127.0.0.1", port: int = 8080, api_key: Optional[str] = None,
          max_batch_tokens: int = 16384, max_batch_requests: int = 64, max_queue: int = 512,
          max_input_length: Optional[int] = None, log_level: str = "info") -> None:
    """Load `model` and serve it until SIGINT/SIGTERM, which stop accepting and finish the requests in flight.

    Raises:
        ValueError: a limit that cannot work (an input limit above the batch token budget, non-positive
            values) or a checkpoint this server cannot serve.
    """
    for name, value in (("max_batch_tokens", max_batch_tokens), ("max_batch_requests", max_batch_requests),
                        ("max_queue", max_queue)):
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    service = load(model, max_input_length)
    if service.max_input_length > max_batch_tokens:
        raise ValueError(f"--max-batch-tokens {max_batch_tokens} is less than the maximum input length "
                         f"{service.max_input_length}: the longest input would never fit in a batch; raise it or "
                         f"lower --max-input-length")
    app = create_app(service, Limits(max_batch_tokens, max_batch_requests, max_queue, api_key))
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=30)
