"""The batching scheduler: one worker thread owns the model; the event loop hands it work and gets results back.

- `ForwardWorker` (embeddings, rerank, classification): inputs wait in one FIFO queue; each forward takes as
  many as fit in `max_batch_requests` rows and `max_batch_tokens` padded tokens (rows × longest row).
- `GenerationWorker` (causal LMs): continuous batching. Each sequence is prefilled alone (exactly as
  `generate()` runs a single prompt) and then joins the running batch between two decoding steps; it leaves
  when it ends (eos, max_tokens, a stop string, or its client went away). The batch shares one KVCache whose
  rows are left-padded to a common length, with an attention mask hiding the padding and per-row position ids,
  so that every row computes what it would alone. Each sequence keeps its own sampling settings, logits
  processors and random generator.

Results go back to the event loop with `loop.call_soon_threadsafe`; nothing blocks the loop.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..generation import CausalSteps, apply_processors, build_processors
from ..layers import KVCache
from .service import Encoded, Service

logger = logging.getLogger(__name__)


class Metrics:
    """Prometheus metrics of one server, in their own registry (several servers can live in one process)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter("pretrained_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.latency = Histogram("pretrained_request_duration_seconds", "Time from request to full answer",
                                 ["route"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
        self.queue_depth = Gauge("pretrained_queue_depth", "Inputs or sequences waiting for the model", registry=r)
        self.in_flight = Gauge("pretrained_requests_in_flight", "Requests accepted and not yet answered",
                               registry=r)
        self.running = Gauge("pretrained_running_sequences", "Sequences in the running generation batch",
                             registry=r)
        self.batch_size = Histogram("pretrained_batch_size", "Rows per model forward", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_tokens = Histogram("pretrained_batch_tokens", "Padded tokens per model forward", registry=r,
                                      buckets=(16, 64, 256, 1024, 4096, 16384, 65536))
        self.input_tokens = Counter("pretrained_input_tokens", "Tokens of the inputs and prompts", registry=r)
        self.generated_tokens = Counter("pretrained_generated_tokens", "Tokens generated", registry=r)
        self.forward_seconds = Histogram("pretrained_forward_duration_seconds", "Time of one model forward",
                                         registry=r, buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25,
                                                              .5, 1, 2.5))

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class Worker:
    """A thread that runs `_work()` whenever there is work, until `stop()`, which lets it finish what it holds."""

    def __init__(self, service: Service, metrics: Metrics):
        self.service = service
        self.metrics = metrics
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="pretrained-serve-model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish all accepted work, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cond:
                while not self._has_work() and not self._stopping:
                    self._cond.wait()
                if not self._has_work():
                    return
            try:
                self._work()
            except Exception:  # a bug must not kill the thread that every request waits on
                logger.exception("model worker failed")

    def _has_work(self) -> bool:
        raise NotImplementedError

    def _work(self) -> None:
        raise NotImplementedError


# -- embeddings, rerank, classification --------------------------------------------------------------------
@dataclass
class _Input:
    encoded: Encoded
    deliver: Callable[[object], None]  # called with the (C,) tensor, or with an exception


class ForwardWorker(Worker):
    """Batches single inputs of all requests into padded forwards (see the module docstring)."""

    def __init__(self, service: Service, metrics: Metrics, max_batch_tokens: int, max_batch_requests: int):
        super().__init__(service, metrics)
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_requests = max_batch_requests
        self._queue: collections.deque[_Input] = collections.deque()

    def submit(self, inputs: list[Encoded], deliver: Callable[[int, object], None]) -> None:
        """Queue `inputs`; `deliver(i, result)` is called from the worker thread for each."""
        with self._cond:
            for i, enc in enumerate(inputs):
                self._queue.append(_Input(enc, lambda result, i=i: deliver(i, result)))
            self.metrics.queue_depth.set(len(self._queue))
            self._cond.notify()

    def _has_work(self) -> bool:
        return bool(self._queue)

    def _take(self) -> list[_Input]:
        """The next batch: FIFO, while the padded size (rows × longest) stays within the limits."""
        with self._cond:
            batch, width = [], 0
            while self._queue and len(batch) < self.max_batch_requests:
                w = max(width, len(self._queue[0].encoded.ids))
                if batch and w * (len(batch) + 1) > self.max_batch_tokens:
                    break
                batch.append(self._queue.popleft())
                width = w
            self.metrics.queue_depth.set(len(self._queue))
        return batch

    def _work(self) -> None:
        batch = self._take()
        if not batch:
            return
        self.metrics.input_tokens.inc(sum(len(x.encoded.ids) for x in batch))
        done = set()
        try:
            start = time.perf_counter()
            for indices, outputs in self.service.forward_batch([x.encoded for x in batch]):
                self.metrics.forward_seconds.observe(time.perf_counter() - start)
                self.metrics.batch_size.observe(len(indices))
                self.metrics.batch_tokens.observe(len(indices) * max(len(batch[i].encoded.ids) for i in indices))
                for i, result in zip(indices, outputs):
                    batch[i].deliver(result)
                    done.add(i)
                start = time.perf_counter()
        except Exception as e:
            logger.exception("forward failed")
            for i, x in enumerate(batch):
                if i not in done:
                    x.deliver(e)


# -- generation ----------------------------------------------------------------------------------------------
@dataclass
class Sequence:
    """One sequence to generate (a request with `n` choices has n of them).

    `emit(kind, payload)` is called from the worker thread: ("text", str) for each new piece of text,
    then ("done", (finish_reason, completion_tokens)), or ("error", exception).
    """

    prompt: list[int]
    max_new_tokens: int
    do_sample: bool
    temperature: float
    top_p: float
    generator: Optional[torch.Generator]
    stop: list[str]
    emit: Callable[[str, object], None]
    cancelled: bool = False  # set by the event loop when the client goes away
    # state, owned by the worker
    tokens: list[int] = field(default_factory=list)
    procs: list = field(default_factory=list)
    eos: set = field(default_factory=set)
    sent: int = 0  # characters of text emitted so far
    position: int = 0  # position id of the next token fed to the model


class GenerationWorker(Worker):
    """Continuous batching over a causal LM (see the module docstring)."""

    def __init__(self, service: Service, metrics: Metrics, max_batch_requests: int, max_batch_tokens: int):
        super().__init__(service, metrics)
        self.max_rows = max_batch_requests
        self.max_batch_tokens = max_batch_tokens
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._rows: list[Sequence] = []
        self._cache: Optional[KVCache] = None
        self._mask: Optional[Tensor] = None  # (B, S) 1 for real tokens, 0 for left padding
        model = service.model
        self._device = next(model.parameters()).device
        self._eos = model.generation_config.eos_token_id

    def submit(self, sequences: list[Sequence]) -> None:
        with self._cond:
            self._waiting.extend(sequences)
            self.metrics.queue_depth.set(len(self._waiting))
            self._cond.notify()

    def _has_work(self) -> bool:
        return bool(self._waiting or self._rows)

    def _work(self) -> None:
        self._drop([i for i, s in enumerate(self._rows) if s.cancelled])
        self._admit()
        if self._rows:
            try:
                self._decode_step()
            except Exception as e:  # the running rows fail; the server goes on with the next requests
                logger.exception("decoding step failed")
                for seq in self._rows:
                    seq.emit("error", e)
                self._rows, self._cache, self._mask = [], None, None
        self.metrics.running.set(len(self._rows))

    # -- joining: prefill alone, then take a row of the shared cache --------------------------------------
    def _admit(self) -> None:
        while len(self._rows) < self.max_rows:
            with self._cond:
                if not self._waiting:
                    break
                S = self._mask.shape[1] if self._mask is not None else 0
                nxt = self._waiting[0]
                if self._rows and (len(self._rows) + 1) * max(S, len(nxt.prompt)) > self.max_batch_tokens:
                    break
                seq = self._waiting.popleft()
                self.metrics.queue_depth.set(len(self._waiting))
            if seq.cancelled:
                seq.emit("done", ("cancelled", 0))
                continue
            try:
                self._prefill(seq)
            except Exception as e:
                logger.exception("prefill failed")
                seq.emit("error", e)

    def _settings(self, seq: Sequence):
        from ..generation import resolve_generation_config

        model = self.service.model
        args = {"max_new_tokens": seq.max_new_tokens, "do_sample": seq.do_sample}
        if seq.do_sample:
            args.update(temperature=seq.temperature, top_p=seq.top_p)
        cfg, _ = resolve_generation_config(model.generation_config, None, args)
        eos = cfg.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        eos_t = torch.tensor(eos, device=self._device) if eos else None
        max_length = len(seq.prompt) + seq.max_new_tokens
        return build_processors(cfg, eos_t, max_length, None, self._device), set(eos)

    def _prefill(self, seq: Sequence) -> None:
        seq.procs, seq.eos = self._settings(seq)
        P = len(seq.prompt)
        self.metrics.input_tokens.inc(P)
        # The prompt's cache holds just the prompt: the rows grow in the shared cache, which doubles as needed
        # instead of reserving prompt + max_tokens for every row.
        steps = CausalSteps(self.service.model, None, P)
        ids = torch.tensor([seq.prompt], dtype=torch.long, device=self._device)
        start = time.perf_counter()
        logits = steps.prefill(ids)  # (1, V): exactly generate()'s first step for this prompt alone
        self.metrics.forward_seconds.observe(time.perf_counter() - start)
        seq.position = P
        if self._accept(seq, self._choose(seq, logits)):
            return  # done after one token: it never joins
        cache = steps.cache
        S = self._mask.shape[1] if self._mask is not None else 0
        row_mask = torch.ones((1, max(S, P)), dtype=torch.long, device=self._device)
        row_mask[:, :max(S, P) - P] = 0
        if self._rows and P < S:
            cache.pad_left(S - P)
        elif self._rows and P > S:
            self._cache.pad_left(P - S)
            self._mask = F.pad(self._mask, (P - S, 0))
        if self._rows:
            self._cache = KVCache.cat([self._cache, cache])
            self._mask = torch.cat([self._mask, row_mask])
        else:
            self._cache, self._mask = cache, row_mask
        self._cache.capacity = 0
        self._rows.append(seq)

    # -- one step of the running batch --------------------------------------------------------------------
    def _decode_step(self) -> None:
        rows = self._rows
        B = len(rows)
        tokens = torch.tensor([[s.tokens[-1]] for s in rows], dtype=torch.long, device=self._device)  # (B, 1)
        positions = torch.tensor([[s.position] for s in rows], dtype=torch.long, device=self._device)  # (B, 1)
        self._mask = torch.cat([self._mask, self._mask.new_ones((B, 1))], dim=1)  # (B, S + 1)
        self.metrics.batch_size.observe(B)
        self.metrics.batch_tokens.observe(B * self._mask.shape[1])
        start = time.perf_counter()
        out = self.service.model(tokens, attention_mask=self._mask, position_ids=positions,
                                 past_key_values=self._cache, use_cache=True)
        self.metrics.forward_seconds.observe(time.perf_counter() - start)
        self._cache = out.past_key_values
        logits = out.logits[:, -1, :].to(copy=True, dtype=torch.float32)  # (B, V)
        finished = []
        for i, seq in enumerate(rows):
            seq.position += 1
            if self._accept(seq, self._choose(seq, logits[i:i + 1])):
                finished.append(i)
        self._drop(finished)

    def _choose(self, seq: Sequence, logits: Tensor) -> int:
        """The next token of `seq` from its logits (1, V): its processors, then argmax or a draw."""
        if seq.procs:
            history = torch.tensor([seq.prompt + seq.tokens], dtype=torch.long, device=self._device)
            logits = apply_processors(seq.procs, history, logits)
        if seq.do_sample:
            return int(torch.multinomial(F.softmax(logits, dim=-1), 1, generator=seq.generator))
        return int(torch.argmax(logits, dim=-1))

    def _accept(self, seq: Sequence, token: int) -> bool:
        """Record `token`, send the new text; True when the sequence is finished."""
        seq.tokens.append(token)
        self.metrics.generated_tokens.inc()
        reason = None
        if token in seq.eos:
            reason = "stop"
        elif len(seq.tokens) >= seq.max_new_tokens:
            reason = "length"
        ids = seq.tokens[:-1] if token in seq.eos else seq.tokens
        text = self.service.decoder.decode(ids, skip_special_tokens=True)
        end = len(text)
        for stop in seq.stop:
            at = text.find(stop, max(0, seq.sent - len(stop) + 1))
            if at != -1 and at < end:
                end, reason = at, "stop"
        if reason is None:
            if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for its other bytes
                return False
            end = min(end, len(text) - _held_back(text, seq.stop))
        if end > seq.sent:
            seq.emit("text", text[seq.sent:end])
            seq.sent = end
        if reason is not None:
            seq.emit("done", (reason, len(seq.tokens)))
            return True
        return False

    def _drop(self, rows: list[int]) -> None:
        """Remove finished or cancelled rows from the batch and the padding no remaining row needs."""
        if not rows:
            return
        for i in rows:
            if self._rows[i].cancelled:
                self._rows[i].emit("done", ("cancelled", len(self._rows[i].tokens)))
        keep = [i for i in range(len(self._rows)) if i not in set(rows)]
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._cache = self._mask = None
            return
        index = torch.tensor(keep, device=self._device)
        self._cache.reorder(index)
        self._mask = self._mask.index_select(0, index)
        # Columns that every remaining row masks out (left padding of rows that left) cost compute each step.
        unused = int(self._mask.any(dim=0).long().argmax())
        if unused >= 16 or unused * 4 >= self._mask.shape[1]:
            self._cache.drop_left(unused)
            self._mask = self._mask[:, unused:]


def _held_back(text: str, stops: list[str]) -> int:
    """How many characters at the end of `text` could be the start of a stop string (not sent yet)."""
    held = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:n]):
                held = n
                break
    return held
