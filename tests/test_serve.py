"""`pretrained serve` against real clients: the official `openai` client and httpx for the TEI routes.

Servers run on free loopback ports: in this process (uvicorn in a thread) for the model kinds, and one through
the `pretrained serve` command in a subprocess for the limits, the API key and SIGTERM. Served numbers are
compared with the library's offline results: embeddings within TOL, greedy tokens identical.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import openai
import pytest
import torch
import transformers

from conftest import build_hf, perturb

from pretrained import AutoTokenizer, CrossEncoder, GPT2LMHeadModel, SentenceTransformer
from pretrained.serve import Limits, create_app, load

TOL = 1e-5  # served embeddings and scores against the offline ones
EOS = 49
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}w7{% endif %}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 120.0, proc=None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become healthy")


class ThreadServer:
    """uvicorn serving an app in a thread of this process, on a free port."""

    def __init__(self, folder: str, **limits):
        import uvicorn

        self.service = load(folder, limits.pop("max_input_length", None))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The keep-alive of `pretrained serve` (30 s), not uvicorn's 5 s: under load a client coroutine can take
        # longer than 5 s to send its next request, and a connection closed just as it is reused is a ReadError.
        config = uvicorn.Config(create_app(self.service, Limits(**limits)), host="127.0.0.1", port=self.port,
                                log_level="warning", timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_healthy(self.url)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)


def _word_tokenizer(folder, size: int, special: dict[int, str], chat_template: str | None = None) -> None:
    """A word-level tokenizer over the model's vocabulary: 'w0' … 'w{size-1}', special tokens named."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    vocab = {special.get(i, f"w{i}"): i for i in range(size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(t, special=True) for t in special.values()])
    tok.save(os.path.join(folder, "tokenizer.json"))
    config = {"eos_token": special.get(EOS), "bos_token": special.get(EOS)}
    if chat_template:
        config["chat_template"] = chat_template
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f)


def _gpt2_folder(root, n_positions: int, eos: bool) -> str:
    """A tiny GPT-2 whose greedy continuations depend on the context, with a word-level tokenizer; scaled as in
    test_generation so that no two candidates nearly tie."""
    torch.manual_seed(1)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=n_positions,
                                     bos_token_id=EOS if eos else None, eos_token_id=EOS if eos else None,
                                     tie_word_embeddings=False)
    model = transformers.GPT2LMHeadModel(config)
    perturb(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            for key, factor in {"lm_head": 25.0, "wte": 10.0, "wpe": 10.0}.items():
                if key in name and p.dim() > 1:
                    p.mul_(factor)
    model.save_pretrained(root)
    _word_tokenizer(root, 50, {EOS: "<|endoftext|>"}, CHAT_TEMPLATE)
    return str(root)


def _bert_head_folder(root, minilm_dir: str, num_labels: int, seed: int) -> str:
    """A tiny seeded BertForSequenceClassification over MiniLM's vocabulary and tokenizer (24 positions)."""
    id2label = {i: name for i, name in enumerate(["negative", "neutral", "positive"][:num_labels])} \
        if num_labels > 1 else None
    extra = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}
    model = build_hf("BertForSequenceClassification", seed=seed, vocab_size=30522, num_labels=num_labels, **extra)
    model.save_pretrained(root)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(minilm_dir, name), os.path.join(root, name))
    return str(root)


# -- servers ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embed_server(minilm_dir):
    server = ThreadServer(minilm_dir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tiny_embed_dir(minilm_dir, tmp_path_factory):
    """A tiny seeded BertModel over MiniLM's vocabulary and tokenizer (24 positions) as a sentence-transformers
    folder: the load test measures the server, not the CPU."""
    root = tmp_path_factory.mktemp("tiny-embed")
    build_hf("BertModel", seed=4, vocab_size=30522).save_pretrained(root)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(minilm_dir, name), os.path.join(root, name))
    # a sentence-transformers folder: mean pooling that leaves the prompt out, and two prompts
    files = {"modules.json": [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                              {"idx": 1, "name": "1", "path": "1_Pooling",
                               "type": "sentence_transformers.models.Pooling"}],
             "1_Pooling/config.json": {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True,
                                       "include_prompt": False},
             "sentence_bert_config.json": {"max_seq_length": 24, "do_lower_case": False},
             "config_sentence_transformers.json": {"prompts": {"query": "query: ",
                                                               "passage": "a longer passage prompt: "}}}
    for name, content in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        with open(os.path.join(root, name), "w") as f:
            json.dump(content, f)
    return str(root)


@pytest.fixture(scope="module")
def tiny_embed_server(tiny_embed_dir):
    server = ThreadServer(tiny_embed_dir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return _gpt2_folder(tmp_path_factory.mktemp("gpt2"), n_positions=64, eos=True)


@pytest.fixture(scope="module")
def gen_server(gpt2_dir):
    server = ThreadServer(gpt2_dir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def classifier_server(minilm_dir, tmp_path_factory):
    server = ThreadServer(_bert_head_folder(tmp_path_factory.mktemp("classifier"), minilm_dir, 3, seed=2))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def reranker_server(minilm_dir, tmp_path_factory):
    server = ThreadServer(_bert_head_folder(tmp_path_factory.mktemp("reranker"), minilm_dir, 1, seed=3))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory):
    """`pretrained serve` in a subprocess: a GPT-2 without eos (it generates until max_tokens), an API key,
    two requests in flight at most, prompts of at most 8 tokens."""
    folder = _gpt2_folder(tmp_path_factory.mktemp("gpt2-long"), n_positions=2048, eos=False)
    port = free_port()
    log = open(tmp_path_factory.mktemp("log") / "server.log", "w+")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "pretrained.cli", "serve", folder, "--port", str(port),
                             "--api-key", "secret", "--max-queue", "2", "--max-input-length", "8"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc=proc)
    except Exception:
        log.seek(0)
        proc.kill()
        raise RuntimeError(log.read())
    yield {"url": url, "proc": proc, "log": log}
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# -- offline results --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return SentenceTransformer(minilm_dir, device="cpu")


def offline_embeddings(model, texts, normalize=True):
    """The library's SentenceTransformer embeddings of `texts`."""
    return model.encode(texts, convert_to_tensor=True, normalize_embeddings=normalize)


@pytest.fixture(scope="module")
def gpt2(gpt2_dir):
    return GPT2LMHeadModel.from_pretrained(gpt2_dir)


def offline_text(gpt2, ids, max_new_tokens, **kwargs):
    """What generate() makes of this prompt alone: (text, finish_reason)."""
    out = gpt2.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, **kwargs)[0, len(ids):].tolist()
    reason = "length"
    if EOS in out:
        out, reason = out[:out.index(EOS)], "stop"
    return " ".join(f"w{i}" for i in out), reason


def words(ids):
    return " ".join(f"w{i}" for i in ids)


TEXTS = ["hello world", "The quick brown fox jumps over the lazy dog.", "a", "Serving embeddings, in batches!",
         "Tokyo is the capital of Japan and its largest city, with millions of inhabitants."]


# -- embeddings ---------------------------------------------------------------------------------------------
def test_openai_embeddings_equal_offline(embed_server, minilm):
    client = openai.OpenAI(base_url=embed_server.url + "/v1", api_key="unused")
    expected = offline_embeddings(minilm, TEXTS)
    res = client.embeddings.create(model="minilm", input=TEXTS)
    got = torch.tensor([d.embedding for d in res.data])
    assert [d.index for d in res.data] == list(range(len(TEXTS)))
    assert (got - expected).abs().max() <= TOL
    assert res.usage.prompt_tokens == sum(len(minilm.tokenizer.encode(t)) for t in TEXTS)

    one = client.embeddings.create(model="minilm", input=TEXTS[1])
    assert (torch.tensor(one.data[0].embedding) - expected[1]).abs().max() <= TOL
    # base64 (what the openai client asks for by default when numpy is present) and Matryoshka dimensions
    raw = httpx.post(embed_server.url + "/v1/embeddings", json={"input": TEXTS[:2], "encoding_format": "base64"})
    vectors = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in raw.json()["data"]]
    assert np.abs(np.stack(vectors) - expected[:2].numpy()).max() <= TOL
    small = client.embeddings.create(model="minilm", input=TEXTS[0], dimensions=8).data[0].embedding
    assert len(small) == 8
    assert (torch.tensor(small) - torch.nn.functional.normalize(expected[0, :8], dim=0)).abs().max() <= TOL
    # token ids are taken as they are
    ids = minilm.tokenizer.encode(TEXTS[3])
    by_ids = client.embeddings.create(model="minilm", input=[ids]).data[0].embedding
    assert (torch.tensor(by_ids) - expected[3]).abs().max() <= TOL


def test_tei_embed(embed_server, minilm):
    url = embed_server.url
    expected = offline_embeddings(minilm, TEXTS)
    got = httpx.post(url + "/embed", json={"inputs": TEXTS}).json()
    assert (torch.tensor(got) - expected).abs().max() <= TOL
    single = httpx.post(url + "/embed", json={"inputs": TEXTS[4], "normalize": False}).json()
    raw = offline_embeddings(minilm, TEXTS[4:], normalize=False)
    assert (torch.tensor(single) - raw).abs().max() <= TOL

    long = " ".join(["word"] * 400)
    r = httpx.post(url + "/embed", json={"inputs": long})
    assert r.status_code == 413 and r.json()["error_type"] == "Validation" and "256" in r.json()["error"]
    r = httpx.post(url + "/embed", json={"inputs": ["short", long], "truncate": True})
    assert r.status_code == 200
    assert (torch.tensor(r.json()) - offline_embeddings(minilm, ["short", long])).abs().max() <= TOL
    left = httpx.post(url + "/embed", json={"inputs": long + " end", "truncate": True,
                                            "truncation_direction": "Left"}).json()
    assert not torch.allclose(torch.tensor(left), torch.tensor(r.json()[1]), atol=1e-3)

    r = httpx.post(url + "/embed", json={"inputs": ["x"] * 65})
    assert r.status_code == 413 and "65 inputs" in r.json()["error"]
    r = httpx.post(url + "/embed", json={"inputs": "x", "prompt_name": "nope"})
    assert r.status_code == 422 and "prompt_name" in r.json()["error"]
    r = httpx.post(url + "/embed", json={"inputs": TEXTS[1], "prompt_name": "query"})  # sentence-transformers'
    assert (torch.tensor(r.json()[0]) - minilm.encode(TEXTS[1], prompt_name="query", convert_to_tensor=True)
            ).abs().max() <= TOL


def test_prompts_of_concurrent_requests(tiny_embed_server, tiny_embed_dir):
    """Requests with different prompts batched together get the embeddings of their own prompt."""
    model = SentenceTransformer(tiny_embed_dir, device="cpu")
    jobs = [(t, name) for t in TEXTS[:4] for name in (None, "query", "passage")]

    async def run():
        async with httpx.AsyncClient(base_url=tiny_embed_server.url) as client:
            return await asyncio.gather(*(client.post("/embed", json={"inputs": t, "prompt_name": name})
                                          for t, name in jobs))

    for (text, name), r in zip(jobs, asyncio.run(run())):
        assert r.status_code == 200, r.text
        want = model.encode(text, prompt_name=name, convert_to_tensor=True, normalize_embeddings=True)
        assert (torch.tensor(r.json()[0]) - want).abs().max() <= TOL


def test_malformed_bodies_get_422_naming_the_field(embed_server, gen_server):
    r = httpx.post(embed_server.url + "/embed", json={"inputs": 5})
    assert r.status_code == 422 and r.json()["error"].startswith("inputs") and r.json()["error_type"] == "Validation"
    r = httpx.post(embed_server.url + "/embed", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = httpx.post(embed_server.url + "/v1/embeddings", json={"input": "x", "encoding_format": "int8"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "encoding_format"
    client = openai.OpenAI(base_url=gen_server.url + "/v1", api_key="unused")
    with pytest.raises(openai.UnprocessableEntityError, match="temperature"):
        client.completions.create(model="m", prompt="w1", temperature=5)
    r = httpx.post(gen_server.url + "/v1/chat/completions", json={"messages": [{"role": "nobody", "content": "x"}]})
    assert r.status_code == 422 and "messages.0.role" in r.json()["error"]["message"]


def test_load_2000_embedding_requests_from_64_clients(tiny_embed_server, tiny_embed_dir):
    """Mixed lengths, 64 clients at once: every answer arrives once and equals the offline embedding."""
    embed_server = tiny_embed_server
    minilm = SentenceTransformer(tiny_embed_dir, device="cpu")
    rng = random.Random(0)
    vocab = "the cat dog house tree car city river blue green red big small old new water fire light dark".split()
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.choice([1, 2, 3, 5, 8, 13, 18]))) + f" {i}"
             for i in range(400)]
    expected = offline_embeddings(minilm, texts)
    jobs = [i % len(texts) for i in range(2000)]
    rng.shuffle(jobs)

    async def run():
        results = {}
        queue = asyncio.Queue()
        for n, j in enumerate(jobs):
            queue.put_nowait((n, j))
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=embed_server.url, limits=limits, timeout=120) as client:
            async def one_client():
                while not queue.empty():
                    n, j = queue.get_nowait()
                    r = await client.post("/embed", json={"inputs": texts[j]})
                    assert r.status_code == 200, r.text
                    assert n not in results
                    results[n] = r.json()[0]

            await asyncio.gather(*(one_client() for _ in range(64)))
        return results

    results = asyncio.run(run())
    assert sorted(results) == list(range(2000))
    got = torch.tensor([results[n] for n in range(2000)])
    assert (got - expected[jobs]).abs().max() <= TOL
    metrics = httpx.get(embed_server.url + "/metrics").text
    batches = float(re.search(r"^pretrained_batch_size_count (\S+)", metrics, re.M).group(1))
    assert batches < 2000  # requests were batched together


# -- rerank and predict ----------------------------------------------------------------------------------------
def _offline_scores(folder, pairs, raw=False):
    """The library's CrossEncoder scores of `pairs` (its default activation, or the raw logits)."""
    model = CrossEncoder(folder, device="cpu")
    return model.predict([list(p) for p in pairs], convert_to_tensor=True,
                         activation_fn=torch.nn.Identity() if raw else None)


def test_tei_rerank(reranker_server):
    url, folder = reranker_server.url, reranker_server.service.name
    query, texts = "what is the capital of japan", ["Tokyo is the capital.", "Bananas are yellow.", "Japan"]
    logits = _offline_scores(folder, [(query, t) for t in texts], raw=True)
    scores = _offline_scores(folder, [(query, t) for t in texts])
    r = httpx.post(url + "/rerank", json={"query": query, "texts": texts, "return_text": True}).json()
    assert [e["index"] for e in r] == scores.argsort(descending=True).tolist()
    for e in r:
        assert abs(e["score"] - scores[e["index"]].item()) <= TOL and e["text"] == texts[e["index"]]
    raw = httpx.post(url + "/rerank", json={"query": query, "texts": texts, "raw_scores": True}).json()
    for e in raw:
        assert abs(e["score"] - logits[e["index"]].item()) <= TOL and "text" not in e
    r = httpx.post(url + "/rerank", json={"query": query, "texts": ["word " * 30]})
    assert r.status_code == 413
    assert httpx.post(url + "/rerank", json={"query": query, "texts": ["word " * 30], "truncate": True}).is_success
    assert httpx.post(url + "/embed", json={"inputs": "x"}).status_code == 404  # not an embedding model


def _single_logits(model, text):
    """A classifier's logits for one text (CrossEncoder.predict takes pairs)."""
    batch = model.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        return model.model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits[0]


def test_tei_predict(classifier_server):
    url, folder = classifier_server.url, classifier_server.service.name
    texts = [("I love it",), ("a pair of", "texts"), ("it is fine",)]
    model = CrossEncoder(folder, device="cpu")
    probs = torch.stack([_single_logits(model, t[0]) if len(t) == 1 else model.predict(list(t), convert_to_tensor=True)
                         for t in texts]).softmax(-1)
    labels = ["negative", "neutral", "positive"]
    one = httpx.post(url + "/predict", json={"inputs": "I love it"}).json()
    assert [e["label"] for e in one] == [labels[j] for j in probs[0].argsort(descending=True).tolist()]
    assert all(abs(e["score"] - probs[0, labels.index(e["label"])].item()) <= TOL for e in one)
    batch = httpx.post(url + "/predict", json={"inputs": [list(t) for t in texts]}).json()
    for row, result in enumerate(batch):
        assert all(abs(e["score"] - probs[row, labels.index(e["label"])].item()) <= TOL for e in result)
    pair = httpx.post(url + "/predict", json={"inputs": ["a pair of", "texts"]}).json()
    assert [e["label"] for e in pair] == [e["label"] for e in batch[1]]
    assert all(abs(a["score"] - b["score"]) <= TOL for a, b in zip(pair, batch[1]))
    assert httpx.post(url + "/predict", json={"inputs": "word " * 30}).status_code == 413
    assert httpx.post(url + "/predict", json={"inputs": [["a", "b", "c"]]}).status_code == 422


# -- generation ---------------------------------------------------------------------------------------------
def test_completions_greedy_equal_generate(gen_server, gpt2):
    client = openai.OpenAI(base_url=gen_server.url + "/v1", api_key="unused")
    for prompt, k in (([1, 2, 3], 10), ([5], 20), ([7, 8, 9, 10, 11, 12], 5)):
        res = client.completions.create(model="gpt2", prompt=words(prompt), max_tokens=k, temperature=0)
        text, reason = offline_text(gpt2, prompt, k)
        assert res.choices[0].text.strip() == text and res.choices[0].finish_reason == reason
        assert res.usage.prompt_tokens == len(prompt)
    # several prompts, token-id prompts, and n
    res = client.completions.create(model="gpt2", prompt=[[1, 2], [4, 4, 4]], max_tokens=6, temperature=0, n=2)
    assert len(res.choices) == 4
    for choice in res.choices:
        prompt = [[1, 2], [4, 4, 4]][choice.index // 2]
        assert choice.text.strip() == offline_text(gpt2, prompt, 6)[0]


def test_completions_stop_and_seeded_sampling(gen_server, gpt2):
    client = openai.OpenAI(base_url=gen_server.url + "/v1", api_key="unused")
    full, _ = offline_text(gpt2, [1, 2, 3], 12)
    stop_word = full.split()[3]
    res = client.completions.create(model="gpt2", prompt="w1 w2 w3", max_tokens=12, temperature=0,
                                    stop=[" " + stop_word])
    assert res.choices[0].finish_reason == "stop"
    assert res.choices[0].text == full[:full.index(" " + stop_word)]
    # a seed makes sampling reproducible, and draws what generate() draws with that seed
    kwargs = dict(model="gpt2", prompt="w1 w2 w3", max_tokens=10, temperature=0.9, top_p=0.95, seed=7)
    a = client.completions.create(**kwargs).choices[0].text
    b = client.completions.create(**kwargs).choices[0].text
    assert a == b
    text, _ = offline_text(gpt2, [1, 2, 3], 10, do_sample=True, temperature=0.9, top_p=0.95,
                           generator=torch.Generator().manual_seed(7))
    assert a.strip() == text


def test_chat_completions(gen_server, gpt2):
    client = openai.OpenAI(base_url=gen_server.url + "/v1", api_key="unused")
    messages = [{"role": "system", "content": "w1 w2"}, {"role": "user", "content": "w9 w10"}]
    res = client.chat.completions.create(model="gpt2", messages=messages, max_tokens=8, temperature=0)
    prompt = [1, 2, 9, 10, 7]  # the template joins the contents and opens the assistant turn with w7
    tokenizer = AutoTokenizer.from_pretrained(gen_server.service.name)
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert tokenizer.encode(rendered, add_special_tokens=False) == prompt
    text, reason = offline_text(gpt2, prompt, 8)
    assert res.choices[0].message.role == "assistant"
    assert res.choices[0].message.content.strip() == text and res.choices[0].finish_reason == reason
    assert res.usage.prompt_tokens == len(prompt)
    stream = client.chat.completions.create(model="gpt2", messages=messages, max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip() == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reason
    assert chunks[-1].usage.completion_tokens == len(text.split()) + (reason == "stop")


def test_32_concurrent_streams_equal_generate(gen_server, gpt2):
    rng = random.Random(1)
    prompts = [[rng.randrange(0, 49) for _ in range(rng.randint(1, 20))] for _ in range(32)]
    lengths = [rng.randint(1, 40) for _ in range(32)]
    expected = [offline_text(gpt2, p, k) for p, k in zip(prompts, lengths)]

    async def run():
        client = openai.AsyncOpenAI(base_url=gen_server.url + "/v1", api_key="unused", max_retries=0)

        async def one(i):
            stream = await client.completions.create(model="gpt2", prompt=words(prompts[i]), max_tokens=lengths[i],
                                                     temperature=0, stream=True)
            pieces, reasons = [], []
            async for chunk in stream:
                pieces.append(chunk.choices[0].text)
                reasons.append(chunk.choices[0].finish_reason)
            return "".join(pieces), [r for r in reasons if r]

        return await asyncio.gather(*(one(i) for i in range(32)))

    results = asyncio.run(run())
    for (text, reasons), (want, reason) in zip(results, expected):
        assert text.strip() == want and reasons == [reason]
    metrics = httpx.get(gen_server.url + "/metrics").text
    assert float(re.search(r"^pretrained_batch_size_sum (\S+)", metrics, re.M).group(1)) > \
        float(re.search(r"^pretrained_batch_size_count (\S+)", metrics, re.M).group(1))  # shared steps


def test_a_failing_model_step_fails_its_requests_only(gen_server, monkeypatch):
    """A decoding step that raises ends the running requests with a 500 (an error event when streaming); the
    server goes on answering."""
    model = gen_server.service.model
    forward = model.forward

    def failing(input_ids=None, **kwargs):
        if input_ids.shape[1] == 1 and kwargs.get("past_key_values") is not None:
            raise RuntimeError("injected failure")
        return forward(input_ids, **kwargs)

    monkeypatch.setattr(model, "forward", failing)
    r = httpx.post(gen_server.url + "/v1/completions", json={"prompt": "w1 w2", "max_tokens": 5, "temperature": 0})
    assert r.status_code == 500 and "injected failure" in r.json()["error"]["message"]
    with httpx.stream("POST", gen_server.url + "/v1/completions",
                      json={"prompt": "w1 w2", "max_tokens": 5, "temperature": 0, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert "injected failure" in json.loads(lines[-1][6:])["error"]["message"]
    # one token needs no decoding step: the server still answers
    r = httpx.post(gen_server.url + "/v1/completions", json={"prompt": "w1 w2", "max_tokens": 1, "temperature": 0})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("length", "stop")
    monkeypatch.setattr(model, "forward", forward)
    assert httpx.get(gen_server.url + "/info").status_code == 200
    assert _metric(gen_server.url, "pretrained_requests_in_flight") == 0


@pytest.fixture(scope="module")
def mistral_dir(tmp_path_factory):
    """A tiny Mistral (rotary positions, grouped KV heads, a sliding window of 6) with the word tokenizer."""
    torch.manual_seed(2)
    config = transformers.MistralConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                        sliding_window=6, bos_token_id=EOS, eos_token_id=EOS,
                                        tie_word_embeddings=False)
    model = transformers.MistralForCausalLM(config)
    perturb(model)
    with torch.no_grad():
        model.lm_head.weight.mul_(30.0)
        model.model.embed_tokens.weight.mul_(10.0)
    root = tmp_path_factory.mktemp("mistral")
    model.save_pretrained(root)
    _word_tokenizer(root, 50, {EOS: "<|endoftext|>"})
    return str(root)


def test_continuous_batching_with_rotary_and_sliding_window(mistral_dir):
    """Rows of a Mistral batch (left-padded, a sliding window shorter than the prompts) decode as alone."""
    from pretrained import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(mistral_dir)
    rng = random.Random(2)
    prompts = [[rng.randrange(0, 49) for _ in range(rng.randint(1, 14))] for _ in range(12)]
    lengths = [rng.randint(1, 24) for _ in range(12)]
    expected = [offline_text(model, p, k) for p, k in zip(prompts, lengths)]
    server = ThreadServer(mistral_dir)
    try:
        async def run():
            client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
            return await asyncio.gather(*(client.completions.create(
                model="m", prompt=words(p), max_tokens=k, temperature=0) for p, k in zip(prompts, lengths)))

        results = asyncio.run(run())
    finally:
        server.stop()
    for res, (text, reason) in zip(results, expected):
        assert res.choices[0].text.strip() == text and res.choices[0].finish_reason == reason


def test_info_models_health_metrics(embed_server, gen_server):
    info = httpx.get(embed_server.url + "/info").json()
    assert info["model_type"] == "embed" and info["max_input_length"] == 256 and info["dtype"] == "float32"
    assert info["max_batch_tokens"] == 16384 and info["max_batch_requests"] == 64
    assert httpx.get(gen_server.url + "/info").json()["model_type"] == "generate"
    client = openai.OpenAI(base_url=embed_server.url + "/v1", api_key="unused")
    assert [m.id for m in client.models.list()] == [embed_server.service.name]
    assert httpx.get(embed_server.url + "/health").json() == {"status": "ok"}
    httpx.post(embed_server.url + "/embed", json={"inputs": "x"})
    text = httpx.get(embed_server.url + "/metrics").text
    for name in ("pretrained_requests_total", "pretrained_queue_depth", "pretrained_batch_size_bucket",
                 "pretrained_input_tokens_total", "pretrained_request_duration_seconds_bucket"):
        assert name in text
    assert re.search(r'pretrained_requests_total\{route="/embed",status="200"\} [1-9]', text)


# -- the command: API key, limits, disconnects, SIGTERM --------------------------------------------------------
def _metric(url, name) -> float:
    text = httpx.get(url + "/metrics", headers={"Authorization": "Bearer secret"}).text
    return float(re.search(rf"^{name} (\S+)", text, re.M).group(1))


def test_api_key_limits_disconnect_and_sigterm(cli_server):
    url, proc = cli_server["url"], cli_server["proc"]
    auth = {"Authorization": "Bearer secret"}
    r = httpx.post(url + "/v1/completions", json={"prompt": "w1", "max_tokens": 2})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong").completions.create(model="m", prompt="w1")
    assert httpx.get(url + "/health").status_code == 200  # health needs no key
    client = openai.OpenAI(base_url=url + "/v1", api_key="secret", max_retries=0)
    assert client.completions.create(model="m", prompt="w1 w2", max_tokens=3).usage.completion_tokens == 3
    with pytest.raises(openai.APIStatusError) as e:  # --max-input-length 8
        client.completions.create(model="m", prompt=words(range(9)), max_tokens=3)
    assert e.value.status_code == 413

    # A client that goes away mid-stream frees its row: far fewer tokens are generated than it asked for.
    before = _metric(url, "pretrained_generated_tokens_total")
    with httpx.stream("POST", url + "/v1/completions", headers=auth,
                      json={"prompt": "w1", "max_tokens": 2000, "stream": True, "temperature": 0}) as r:
        next(r.iter_lines())
    deadline = time.time() + 30
    while _metric(url, "pretrained_running_sequences") > 0 and time.time() < deadline:
        time.sleep(0.05)
    assert _metric(url, "pretrained_requests_in_flight") == 0
    assert _metric(url, "pretrained_generated_tokens_total") - before < 1500

    async def limits_and_sigterm():
        async with httpx.AsyncClient(base_url=url, headers=auth, timeout=120) as http:
            body = {"prompt": "w1 w2", "max_tokens": 600, "stream": True, "temperature": 0,
                    "stream_options": {"include_usage": True}}

            async def stream(started: asyncio.Event, sigterm: bool = False):
                async with http.stream("POST", "/v1/completions", json=body) as r:
                    assert r.status_code == 200
                    lines = []
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            lines.append(line[6:])
                            started.set()
                    return lines

            first, second = asyncio.Event(), asyncio.Event()
            tasks = [asyncio.create_task(stream(first)), asyncio.create_task(stream(second))]
            await first.wait()
            await second.wait()
            # two requests in flight (--max-queue 2): a third is refused, the two go on
            r = await http.post("/v1/completions", json={"prompt": "w1", "max_tokens": 2})
            assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
            proc.send_signal(signal.SIGTERM)  # graceful: both streams still finish
            return await asyncio.gather(*tasks)

    for lines in asyncio.run(limits_and_sigterm()):
        assert lines[-1] == "[DONE]"
        chunks = [json.loads(line) for line in lines[:-1]]
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"
        assert chunks[-1]["usage"]["completion_tokens"] == 600
    # uvicorn ends the process with the signal once its shutdown is complete
    assert proc.wait(30) in (0, -signal.SIGTERM)
    cli_server["log"].seek(0)
    assert "Application shutdown complete" in cli_server["log"].read()


def test_cli_names_the_extra_when_it_is_missing(monkeypatch, capsys):
    from pretrained import cli

    for name in [m for m in sys.modules if m == "pretrained.serve" or m.startswith("pretrained.serve.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi now fails
    with pytest.raises(SystemExit, match=re.escape('pip install "pretrained[serve]"')):
        cli.main(["serve", "some-model"])
