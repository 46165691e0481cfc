"""Benchmark of `pretrained serve`: what dynamic and continuous batching gain over one request at a time.

    python bench/serve.py [--requests 300] [--new-tokens 32] [--threads 1]

- embeddings (the real all-MiniLM-L6-v2, TEI /embed, one text of 4-24 words per request): requests/s and
  p50/p99 latency at concurrency 1, 16 and 64, against the same server run with --max-batch-requests 1 (every
  forward holds one request);
- generation (a GPT-2 of GPT2Config() shape, 124M parameters, seeded random weights, greedy, prompts of 16
  tokens, --new-tokens each): generated tokens/s over 1 and 16 concurrent streams, against the same server
  with --max-batch-requests 1 (one sequence decodes at a time).

Servers run as `pretrained serve` subprocesses on loopback; the clients (httpx, asyncio) run in this process, on
the same machine. Writes its section of bench/RESULTS.md (between the `serve` markers) and prints the table.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time

import httpx

import results
from results import minilm_folder

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, ".work")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, folder: str, threads: int, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(WORK, f"serve-{self.port}.log"), "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "pretrained.cli", "serve", folder, "--port",
                                      str(self.port), *flags], stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited; see {self.log.name}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise TimeoutError("the server did not start")

    def close(self):
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()


def gpt2_folder() -> str:
    """GPT2Config() shape, seeded random weights, and a word-level tokenizer over its 50257 ids ('w0' …)."""
    folder = os.path.join(WORK, "serve-gpt2")
    if os.path.isfile(os.path.join(folder, "tokenizer.json")):
        return folder
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(folder)
    vocab = {f"w{i}": i for i in range(50256)}
    vocab["<|endoftext|>"] = 50256
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(os.path.join(folder, "tokenizer.json"))
    return folder


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def embed_load(url: str, texts: list[str], concurrency: int) -> tuple[float, list[float]]:
    """Send every text as its own /embed request, `concurrency` at a time: (requests/s, latencies)."""
    latencies: list[float] = []
    queue = list(reversed(texts))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as client:
        async def one_client():
            while queue:
                text = queue.pop()
                start = time.perf_counter()
                r = await client.post("/embed", json={"inputs": text})
                r.raise_for_status()
                latencies.append(time.perf_counter() - start)

        await client.post("/embed", json={"inputs": "warm up"})
        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return len(texts) / elapsed, latencies


async def generate_load(url: str, streams: int, new_tokens: int) -> float:
    """`streams` concurrent streamed completions of `new_tokens` each: generated tokens/s."""
    rng = random.Random(0)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def one(i):
            prompt = [rng.randrange(50256) for _ in range(16)]
            body = {"prompt": prompt, "max_tokens": new_tokens, "temperature": 0, "stream": True,
                    "stream_options": {"include_usage": True}}
            async with client.stream("POST", "/v1/completions", json=body) as r:
                r.raise_for_status()
                usage = None
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        usage = json.loads(line[6:]).get("usage") or usage
                return usage["completion_tokens"]

        await one(-1)  # warm up
        start = time.perf_counter()
        tokens = await asyncio.gather(*(one(i) for i in range(streams)))
        return sum(tokens) / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="embedding requests per measurement")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per stream")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the server (OMP_NUM_THREADS; 1 on a shared machine)")
    args = parser.parse_args(argv)
    os.makedirs(WORK, exist_ok=True)
    started = time.time()
    rng = random.Random(0)
    words = ("the quick brown fox jumps over a lazy dog while servers batch many small requests into one "
             "forward pass and answer every client quickly").split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 24))) for _ in range(args.requests)]

    rows = []
    embed = {}
    for label, flags in (("batched", ()), ("one at a time", ("--max-batch-requests", "1"))):
        server = Server(minilm_folder(), args.threads, *flags)
        try:
            for c in (1, 16, 64):
                rps, lat = asyncio.run(embed_load(server.url, texts, c))
                embed[label, c] = rps
                rows.append((f"embeddings, all-MiniLM-L6-v2, concurrency {c}", label, f"{rps:.1f} req/s",
                             f"{1000 * statistics.median(lat):.1f} ms", f"{1000 * percentile(lat, 0.99):.1f} ms"))
                print(rows[-1], flush=True)
        finally:
            server.close()
    gen = {}
    for label, flags in (("continuous batching", ()), ("one at a time", ("--max-batch-requests", "1"))):
        server = Server(gpt2_folder(), args.threads, *flags)
        try:
            for streams in (1, 16):
                tps = asyncio.run(generate_load(server.url, streams, args.new_tokens))
                gen[label, streams] = tps
                rows.append((f"generation, GPT-2 124M greedy, {streams} stream(s) × {args.new_tokens} tokens", label,
                             f"{tps:.1f} tok/s", "", ""))
                print(rows[-1], flush=True)
        finally:
            server.close()

    load = os.getloadavg()
    lines = ["## `pretrained serve` (bench/serve.py)", "",
             f"Generated by `python bench/serve.py --requests {args.requests} --new-tokens {args.new_tokens} "
             f"--threads {args.threads}` on "
             f"{datetime.datetime.now():%Y-%m-%d %H:%M}, in {(time.time() - started) / 60:.1f} minutes; "
             f"{os.cpu_count()} CPUs, load average at the end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} "
             f"(clients and server share the machine).", "",
             "| workload | server | throughput | p50 latency | p99 latency |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in rows]
    lines += ["", "Batching gain (batched ÷ one at a time): embeddings " +
              ", ".join(f"{embed['batched', c] / embed['one at a time', c]:.2f}× at concurrency {c}"
                        for c in (1, 16, 64)) +
              f"; generation {gen['continuous batching', 16] / gen['one at a time', 16]:.2f}× with 16 streams."]
    print(results.write_section("serve", "\n".join(lines)))


if __name__ == "__main__":
    main()
