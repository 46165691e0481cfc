"""The HTTP routes: OpenAI's and text-embeddings-inference's (TEI) APIs over one loaded checkpoint.

Errors are JSON in the shape each family of clients parses: `{"error": {"message", "type", "param", "code"}}`
under /v1 (OpenAI), `{"error": ..., "error_type": ...}` elsewhere (TEI).
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Optional

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .engine import ForwardWorker, GenerationWorker, Metrics, Sequence
from .protocol import (ChatRequest, CompletionRequest, EmbeddingRequest, EmbedRequest, PredictRequest,
                       RerankRequest)
from .service import InputError, Service

_TEI_TYPES = {400: "Validation", 401: "Unauthorized", 413: "Validation", 422: "Validation", 424: "Backend",
              429: "Overloaded", 503: "Unhealthy"}
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                 413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
                 500: "server_error", 503: "server_error"}


@dataclass
class Limits:
    """The server's batching and admission limits (the CLI flags)."""

    max_batch_tokens: int = 16384
    max_batch_requests: int = 64
    max_queue: int = 512
    api_key: Optional[str] = None


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def _error_response(request: Request, status: int, message: str, param: Optional[str] = None) -> JSONResponse:
    if request.url.path.startswith("/v1/"):
        body = {"error": {"message": message, "type": _OPENAI_TYPES.get(status, "invalid_request_error"),
                          "param": param, "code": None}}
    else:
        body = {"error": message, "error_type": _TEI_TYPES.get(status, "Validation")}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc) -> str:
    return ".".join(str(part) for part in loc if part != "body") or "body"


def create_app(service: Service, limits: Limits) -> FastAPI:
    """The ASGI app serving `service`; the model worker starts and stops with the app's lifespan."""
    metrics = Metrics()
    if service.kind == "generate":
        worker = GenerationWorker(service, metrics, limits.max_batch_requests, limits.max_batch_tokens)
    else:
        worker = ForwardWorker(service, metrics, limits.max_batch_tokens, limits.max_batch_requests)
    state = {"in_flight": 0, "ready": False}

    @asynccontextmanager
    async def lifespan(app):
        worker.start()
        state["ready"] = True
        yield
        state["ready"] = False
        await asyncio.to_thread(worker.stop)  # uvicorn has let the requests in flight finish; drain the rest

    app = FastAPI(title="pretrained serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service, app.state.worker, app.state.metrics = service, worker, metrics

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error_response(request, exc.status, exc.message, exc.param)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError):
        return _error_response(request, exc.status, str(exc), exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid body"}
        message = "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in errors[:5])
        return _error_response(request, 422, message or "invalid body", _field(first["loc"]))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return _error_response(request, exc.status_code, str(exc.detail))

    app.add_middleware(_Measure, metrics=metrics)

    async def authorize(request: Request) -> None:
        if limits.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), limits.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")

    class Admission:
        """Counts a request in flight from acceptance to its last byte; refuses one above --max-queue (429)."""

        def __init__(self):
            if state["in_flight"] >= limits.max_queue:
                raise ApiError(429, f"the server is at its limit of {limits.max_queue} requests in flight; "
                                    f"retry later")
            state["in_flight"] += 1
            metrics.in_flight.set(state["in_flight"])
            self.open = True

        def close(self):
            if self.open:
                self.open = False
                state["in_flight"] -= 1
                metrics.in_flight.set(state["in_flight"])

    guarded = [Depends(authorize)]

    # -- for every kind -----------------------------------------------------------------------------------
    @app.get("/health")
    async def health():
        if not state["ready"]:
            raise ApiError(503, "the model is not ready")
        return {"status": "ok"}

    @app.get("/v1/models", dependencies=guarded)
    async def models():
        return {"object": "list", "data": [{"id": service.name, "object": "model", "created": 0,
                                            "owned_by": "pretrained"}]}

    @app.get("/info", dependencies=guarded)
    async def info():
        from .. import __version__

        dtype = str(next(service.model.parameters()).dtype).replace("torch.", "")
        return {"model_id": service.name, "model_type": service.kind, "architecture": type(service.model).__name__,
                "dtype": dtype, "max_input_length": service.max_input_length,
                "max_batch_tokens": limits.max_batch_tokens, "max_batch_requests": limits.max_batch_requests,
                "max_queue": limits.max_queue, "version": __version__}

    @app.get("/metrics", dependencies=guarded)
    async def prometheus():
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- embeddings, rerank, classification ---------------------------------------------------------------
    async def run_forward(encoded: list) -> list[torch.Tensor]:
        """Queue the inputs of one request on the batching worker and wait for all their results."""
        if len(encoded) > limits.max_batch_requests:
            raise ApiError(413, f"{len(encoded)} inputs is more than the maximum of {limits.max_batch_requests} "
                                f"per request")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        results: list = [None] * len(encoded)
        remaining = [len(encoded)]

        def finish():
            if not future.done():
                future.set_result(results)

        def deliver(i, result):  # worker thread
            results[i] = result
            remaining[0] -= 1
            if remaining[0] == 0:
                loop.call_soon_threadsafe(finish)

        admission = Admission()
        try:
            worker.submit(encoded, deliver)
            out = await asyncio.shield(future)
        finally:
            admission.close()
        for r in out:
            if isinstance(r, Exception):
                raise ApiError(424 if not service.kind == "generate" else 500, f"the model failed: {r}")
        return out

    def embed_inputs(inputs, truncate: bool, direction: str, prompt: tuple[str, int], param: str) -> list:
        if isinstance(inputs, str):
            inputs = [inputs]
        if not inputs:
            raise ApiError(422, f"{param}: give at least one input", param)
        if isinstance(inputs[0], int):
            inputs = [inputs]
        encoded = []
        for i, item in enumerate(inputs):
            where = f"{param}[{i}]" if len(inputs) > 1 else param
            if isinstance(item, str):
                enc = service.encode(prompt[0] + item, truncate=truncate, direction=direction, param=where)
                enc.prompt_length = prompt[1]
                encoded.append(enc)
            else:
                encoded.append(service.encode_ids(item, truncate=truncate, direction=direction, param=where))
        return encoded

    def finish_embedding(vector: torch.Tensor, normalize: bool, dimensions: Optional[int]) -> torch.Tensor:
        if dimensions is not None:
            if dimensions > vector.shape[0]:
                raise ApiError(422, f"dimensions: {dimensions} is more than the model's {vector.shape[0]}",
                               "dimensions")
            vector = vector[:dimensions]
        return torch.nn.functional.normalize(vector, dim=0) if normalize else vector

    if service.kind == "embed":
        @app.post("/v1/embeddings", dependencies=guarded)
        async def openai_embeddings(body: EmbeddingRequest):
            encoded = embed_inputs(body.input, False, "right", service.prompt(None), "input")
            vectors = await run_forward(encoded)
            data = []
            for i, v in enumerate(vectors):
                v = finish_embedding(v, True, body.dimensions)
                embedding = base64.b64encode(v.numpy().astype("<f4").tobytes()).decode() \
                    if body.encoding_format == "base64" else v.tolist()
                data.append({"object": "embedding", "index": i, "embedding": embedding})
            tokens = sum(len(e.ids) for e in encoded)
            return JSONResponse({"object": "list", "data": data, "model": service.name,
                                 "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

        @app.post("/embed", dependencies=guarded)
        async def tei_embed(body: EmbedRequest):
            prompt = service.prompt(body.prompt_name)
            encoded = embed_inputs(body.inputs, body.truncate, body.truncation_direction.lower(), prompt, "inputs")
            vectors = await run_forward(encoded)
            return JSONResponse([finish_embedding(v, body.normalize, body.dimensions).tolist() for v in vectors])

    if service.kind in ("rerank", "classify"):
        labels = service.config.id2label or {}
        multi_label = service.config.problem_type == "multi_label_classification"

        def scores(logits: torch.Tensor, raw: bool) -> torch.Tensor:
            if raw:
                return logits
            return logits.sigmoid() if logits.shape[0] == 1 or multi_label else logits.softmax(-1)

        @app.post("/predict", dependencies=guarded)
        async def tei_predict(body: PredictRequest):
            inputs, batched = body.inputs, True
            if isinstance(inputs, str) or (inputs and isinstance(inputs[0], str)):
                inputs, batched = [inputs], False
            if not inputs:
                raise ApiError(422, "inputs: give at least one input", "inputs")
            encoded = []
            for i, item in enumerate(inputs):
                where = f"inputs[{i}]" if batched else "inputs"
                texts = [item] if isinstance(item, str) else item
                if len(texts) not in (1, 2):
                    raise ApiError(422, f"{where}: a text, or a pair of texts [a, b]", where)
                encoded.append(service.encode(texts[0], texts[1] if len(texts) == 2 else None, body.truncate,
                                              body.truncation_direction.lower(), param=where))
            results = []
            for logits in await run_forward(encoded):
                s = scores(logits, body.raw_scores)
                order = s.argsort(descending=True).tolist()
                results.append([{"label": labels.get(j, f"LABEL_{j}"), "score": float(s[j])} for j in order])
            return JSONResponse(results if batched else results[0])

    if service.kind == "rerank":
        activation = service.sentence.activation_fn  # CrossEncoder's: Sigmoid unless the folder names another

        @app.post("/rerank", dependencies=guarded)
        async def tei_rerank(body: RerankRequest):
            encoded = [service.encode(body.query, text, body.truncate, body.truncation_direction.lower(),
                                      param=f"texts[{i}]") for i, text in enumerate(body.texts)]
            logits = await run_forward(encoded)
            ranked = []
            for i, l in enumerate(logits):
                entry = {"index": i, "score": float(l[0] if body.raw_scores else activation(l[None])[0, 0])}
                if body.return_text:
                    entry["text"] = body.texts[i]
                ranked.append(entry)
            return JSONResponse(sorted(ranked, key=lambda e: -e["score"]))

    # -- generation -----------------------------------------------------------------------------------
    if service.kind == "generate":
        positions = service.config.max_position_embeddings

        def sequences_for(prompts: list[list[int]], body, max_tokens: Optional[int], emit_for) -> list[Sequence]:
            seqs = []
            for p, ids in enumerate(prompts):
                room = positions - len(ids)
                new = room if max_tokens is None else max_tokens
                if new > room:
                    raise ApiError(400, f"this model's maximum context length is {positions} tokens; the prompt has "
                                        f"{len(ids)} and max_tokens asks for {new} more", "max_tokens")
                for j in range(body.n):
                    index = p * body.n + j
                    generator = None
                    if body.seed is not None and body.temperature > 0:
                        generator = torch.Generator(device=next(service.model.parameters()).device)
                        generator.manual_seed(body.seed + j)
                    seqs.append(Sequence(prompt=ids, max_new_tokens=new, do_sample=body.temperature > 0,
                                         temperature=body.temperature, top_p=body.top_p, generator=generator,
                                         stop=list(body.stop or []), emit=emit_for(index)))
            return seqs

        async def generate(request: Request, prompts: list[list[int]], body, max_tokens: Optional[int], chat: bool):
            loop = asyncio.get_running_loop()
            events: asyncio.Queue = asyncio.Queue()

            def emit_for(index):
                def emit(kind, payload):  # worker thread
                    loop.call_soon_threadsafe(events.put_nowait, (index, kind, payload))
                return emit

            seqs = sequences_for(prompts, body, max_tokens, emit_for)
            admission = Admission()
            worker.submit(seqs)
            created, rid = int(time.time()), ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
            prompt_tokens = sum(len(p) for p in prompts) * body.n
            obj = "chat.completion" if chat else "text_completion"

            async def events_until_done():
                done = 0
                while done < len(seqs):
                    index, kind, payload = await events.get()
                    if kind == "error":
                        raise ApiError(500, f"generation failed: {payload}")
                    if kind == "done":
                        done += 1
                    yield index, kind, payload

            def cancel():
                for s in seqs:
                    s.cancelled = True
                admission.close()

            if not body.stream:
                texts, reasons, completion = [""] * len(seqs), [None] * len(seqs), 0
                try:
                    async for index, kind, payload in events_until_done():
                        if kind == "text":
                            texts[index] += payload
                        else:
                            reasons[index] = payload[0]
                            completion += payload[1]
                finally:
                    cancel()
                choices = [{"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None,
                            "finish_reason": r} if chat else
                           {"index": i, "text": t, "logprobs": None, "finish_reason": r}
                           for i, (t, r) in enumerate(zip(texts, reasons))]
                return JSONResponse({"id": rid, "object": obj, "created": created, "model": service.name,
                                     "choices": choices,
                                     "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                                               "total_tokens": prompt_tokens + completion}})

            include_usage = bool((body.stream_options or {}).get("include_usage"))

            def chunk(index, text=None, reason=None, first=False):
                if chat:
                    delta = {"role": "assistant", "content": ""} if first else \
                        ({"content": text} if text is not None else {})
                    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
                    kind = "chat.completion.chunk"
                else:
                    choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": reason}
                    kind = "text_completion"
                body_ = {"id": rid, "object": kind, "created": created, "model": service.name, "choices": [choice]}
                if include_usage:
                    body_["usage"] = None
                return f"data: {json.dumps(body_)}\n\n"

            async def chunks():
                completion = 0
                if chat:
                    for i in range(len(seqs)):
                        yield chunk(i, first=True)
                async for index, kind, payload in events_until_done():
                    if kind == "text":
                        yield chunk(index, text=payload)
                    else:
                        completion += payload[1]
                        yield chunk(index, reason=payload[0])
                if include_usage:
                    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                             "total_tokens": prompt_tokens + completion}
                    last = {"id": rid, "object": obj + (".chunk" if chat else ""), "created": created,
                            "model": service.name, "choices": [], "usage": usage}
                    yield f"data: {json.dumps(last)}\n\n"
                yield "data: [DONE]\n\n"

            async def stream():
                try:
                    async for piece in chunks():
                        yield piece
                except ApiError as e:  # headers are sent: the error goes in the stream, as OpenAI sends it
                    yield f"data: {json.dumps({'error': {'message': e.message, 'type': 'server_error'}})}\n\n"
                finally:
                    cancel()  # a client that went away frees its rows at the next step

            return StreamingResponse(stream(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

        @app.post("/v1/completions", dependencies=guarded)
        async def completions(request: Request, body: CompletionRequest):
            prompt = body.prompt
            prompts = [prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else prompt
            if not prompts:
                raise ApiError(422, "prompt: give at least one prompt", "prompt")
            ids = []
            for i, p in enumerate(prompts):
                where = "prompt" if len(prompts) == 1 else f"prompt[{i}]"
                ids.append((service.encode(p, param=where) if isinstance(p, str)
                            else service.encode_ids(p, param=where)).ids)
                if not ids[-1]:
                    raise ApiError(422, f"{where}: the prompt is empty after tokenization", where)
            return await generate(request, ids, body, body.max_tokens, chat=False)

        @app.post("/v1/chat/completions", dependencies=guarded)
        async def chat_completions(request: Request, body: ChatRequest):
            messages = [{"role": m.role, "content": _content_text(m.content)} for m in body.messages]
            text = _render_chat(service.tokenizer, messages)
            ids = service.encode(text, special_tokens=False, param="messages").ids
            max_tokens = body.max_completion_tokens or body.max_tokens
            return await generate(request, [ids], body, max_tokens, chat=True)

    return app


class _Measure:
    """ASGI middleware: counts answers by route and status, and times each until its last byte (streams too)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in _ROUTES:
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def measured_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.metrics.latency.labels(scope["path"]).observe(time.perf_counter() - start)

        try:
            await self.app(scope, receive, measured_send)
        finally:
            self.metrics.requests.labels(scope["path"], str(status[0])).inc()


_ROUTES = {"/health", "/info", "/metrics", "/v1/models", "/v1/embeddings", "/embed", "/rerank", "/predict",
           "/v1/completions", "/v1/chat/completions"}


def _content_text(content) -> str:
    """A message's content as text: a string, or OpenAI's list of parts of which the text parts are kept."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.get("type") != "text":
            raise ApiError(422, f"messages: content parts of type {part.get('type')!r} are not supported (text only)",
                           "messages")
        parts.append(part.get("text", ""))
    return "".join(parts)


def _render_chat(tokenizer, messages: list[dict]) -> str:
    """The prompt text of a conversation, with the checkpoint's chat template and the assistant's turn opened."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except ValueError as e:  # no chat template, or one that raises on these messages
        raise ApiError(400, f"chat template: {e}", "messages") from None
    except ImportError as e:  # jinja2 missing
        raise ApiError(500, str(e)) from None
