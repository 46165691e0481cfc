"""SentenceTransformer.encode of pretrained against sentence-transformers: sentences per second, same run.

    .venv/bin/python bench/sentence.py                          # 10,000 sentences, both models, 3 repetitions
    .venv/bin/python bench/sentence.py --sentences 2000 --bert-base-sentences 500 --repeats 2
    .venv/bin/python bench/sentence.py --write                  # also write the section of bench/RESULTS.md

The sentences are seeded: 5 to 200 words (uniform), words drawn from the MiniLM vocabulary, with punctuation.
Models: the real all-MiniLM-L6-v2 (max_seq_length 256) and a bert-base-shaped sentence-transformers folder
(seeded random weights written by transformers, mean pooling + Normalize, max_seq_length 512) built once into
bench/.work/st-bert-base/. Both libraries load the same folder in this process, on the CPU, with the same
threads; each repetition encodes every sentence with both, alternating which goes first. Each figure is the
median sentences/s with the min-max range over the repetitions, and the ratio pretrained / sentence-transformers.
The embeddings of the two libraries are compared (max abs difference) in the same run.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import re
import statistics
import sys
import time

import results
from results import minilm_folder

THREADS = 2
os.environ.update({"OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS), "HF_HUB_OFFLINE": "1",
                   "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                   "PYTHONWARNINGS": "ignore"})

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, ".work")


def bert_base_folder() -> str:
    """A bert-base-shaped sentence-transformers folder (mean pooling + Normalize), built once."""
    import json
    import shutil

    folder = os.path.join(WORK, "st-bert-base")
    if os.path.isfile(os.path.join(folder, "modules.json")):
        return folder
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig())  # bert-base: 12 layers, 768 wide, 512 positions
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    source = minilm_folder()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "modules.json"):
        shutil.copy(os.path.join(source, name), tmp)
    os.makedirs(os.path.join(tmp, "1_Pooling"))
    with open(os.path.join(tmp, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": 768, "pooling_mode_mean_tokens": True}, f)
    with open(os.path.join(tmp, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": 512, "do_lower_case": False}, f)
    os.replace(tmp, folder)
    return folder


def make_sentences(n: int, seed: int = 0) -> list[str]:
    """n seeded sentences of 5 to 200 words from the MiniLM vocabulary."""
    with open(os.path.join(minilm_folder(), "vocab.txt"), encoding="utf-8") as f:
        words = [w.strip() for w in f if re.fullmatch(r"[a-z]{2,12}", w.strip())]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(5, 200)
        text = " ".join(rng.choice(words) for _ in range(k))
        out.append(text[0].upper() + text[1:] + rng.choice([".", "?", "!", "..."]))
    return out


def fmt(values: list[float]) -> str:
    m = statistics.median(values)
    return f"{m:.1f} ({min(values):.1f}–{max(values):.1f})" if len(values) > 1 else f"{m:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=10_000)
    parser.add_argument("--bert-base-sentences", type=int, default=None,
                        help="sentences for the bert-base-shaped model (default: --sentences); it is ~8x slower")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", default="minilm,bert-base")
    parser.add_argument("--write", action="store_true", help="write the results into bench/RESULTS.md")
    args = parser.parse_args()

    import numpy as np
    import sentence_transformers
    import torch

    sys.path.insert(0, ROOT)
    import pretrained

    torch.set_num_threads(THREADS)
    all_sentences = make_sentences(max(args.sentences, args.bert_base_sentences or 0))
    folders = {"minilm": ("all-MiniLM-L6-v2 (real)", minilm_folder),
               "bert-base": ("bert-base-shaped, random weights", bert_base_folder)}
    started, load_start = time.time(), os.getloadavg()
    rows = []
    for key in args.models.split(","):
        label, folder_fn = folders[key]
        folder = folder_fn()
        n = args.bert_base_sentences if key == "bert-base" and args.bert_base_sentences else args.sentences
        sentences = all_sentences[:n]
        libs = {"pretrained": pretrained.SentenceTransformer(folder, device="cpu"),
                "sentence-transformers": sentence_transformers.SentenceTransformer(folder, device="cpu")}
        tokens = libs["pretrained"].tokenizer(sentences, truncation=True)["input_ids"]
        n_tokens = sum(len(t) for t in tokens)
        rates: dict[str, list[float]] = {name: [] for name in libs}
        outputs = {}
        for rep in range(args.repeats):
            order = list(libs) if rep % 2 == 0 else list(libs)[::-1]
            for name in order:
                t0 = time.perf_counter()
                outputs[name] = libs[name].encode(sentences, batch_size=args.batch_size)
                elapsed = time.perf_counter() - t0
                rates[name].append(len(sentences) / elapsed)
                print(f"{label} rep {rep} {name}: {len(sentences) / elapsed:.1f} sentences/s ({elapsed:.1f} s)",
                      flush=True)
        max_diff = float(np.abs(outputs["pretrained"] - outputs["sentence-transformers"]).max())
        ours, theirs = statistics.median(rates["pretrained"]), statistics.median(rates["sentence-transformers"])
        rows.append(f"| {label}: encode {len(sentences):,} sentences, batch {args.batch_size}, "
                    f"{n_tokens / len(sentences):.0f} tokens/sentence on average | {fmt(rates['pretrained'])} | "
                    f"{fmt(rates['sentence-transformers'])} | {ours / theirs:.2f} | {max_diff:.1e} |")
        del libs

    minutes = (time.time() - started) / 60
    load_end = os.getloadavg()
    section = "\n".join([
        "## SentenceTransformer.encode (bench/sentence.py)",
        "",
        f"Generated by `python bench/sentence.py {' '.join(sys.argv[1:])}`".rstrip() +
        f" on {datetime.datetime.now():%Y-%m-%d %H:%M}, in {minutes:.1f} minutes.",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {THREADS} threads; "
        f"torch {torch.__version__}, sentence-transformers {sentence_transformers.__version__}, "
        f"pretrained {pretrained.__version__}",
        f"- Load average (1/5/15 min) at start {'/'.join(f'{x:.2f}' for x in load_start)}, at end "
        f"{'/'.join(f'{x:.2f}' for x in load_end)} (the machine is shared: other jobs ran beside this one)",
        f"- {args.repeats} repetitions per figure, the libraries alternating; sentences/s, median (min–max); ratio "
        f"= pretrained / sentence-transformers (above 1: pretrained is faster)",
        "",
        "| figure | pretrained | sentence-transformers | ratio | max abs diff |",
        "|---|---|---|---|---|",
        *rows,
    ])
    if args.write:
        section = results.write_section("sentence", section)
    print(section)


if __name__ == "__main__":
    main()
