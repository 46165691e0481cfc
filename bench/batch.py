"""Corpus-scale embedding: `pretrained.batch.embed` (local engine, and Ray with 1 and 2 workers) against a plain
sentence-transformers encode loop over the same file; rows per second, same machine, same run.

    .venv/bin/python bench/batch.py                  # 20,000 sentences with the real all-MiniLM-L6-v2
    .venv/bin/python bench/batch.py --rows 2000 --repeats 1
    .venv/bin/python bench/batch.py --write          # also write the section of bench/RESULTS.md

Input: a parquet file of seeded sentences (5 to 200 words, bench/sentence.py's generator) with an id column.
Each figure is the whole job, read to written: the local engine writes its parts and assembles OUTPUT.parquet;
the sentence-transformers loop reads the same file with pyarrow, encodes every text (batch 32) and writes a
parquet file with the ids and embeddings. These two alternate over the repetitions (median, min–max). Ray runs
after them on a local 2-CPU cluster started once (its start-up is not counted; the job's own scheduling and
actor start-up, model load included, are), once with 1 worker and once with 2; each actor holds 1 thread.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import sys
import time

import results

THREADS = 2
os.environ.update({"OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS), "HF_HUB_OFFLINE": "1",
                   "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                   "PYTHONWARNINGS": "ignore", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"})

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, ".work", "batch")


def sentence_transformers_loop(model, source: str, target: str) -> None:
    """What a user writes without pretrained.batch: read, encode, write."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    emb = model.encode(table.column("text").to_pylist(), batch_size=32, convert_to_numpy=True)
    column = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])
    pq.write_table(pa.table({"id": table.column("id"), "embedding": column}), target)


def fmt(values: list[float]) -> str:
    m = statistics.median(values)
    return f"{m:.1f} ({min(values):.1f}–{max(values):.1f})" if len(values) > 1 else f"{m:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--write", action="store_true", help="write the results into bench/RESULTS.md")
    args = parser.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq
    import sentence_transformers
    import torch

    sys.path.insert(0, ROOT)
    sys.path.insert(0, HERE)
    import pretrained
    from pretrained import batch
    from results import minilm_folder
    from sentence import make_sentences

    torch.set_num_threads(THREADS)
    os.makedirs(WORK, exist_ok=True)
    source = os.path.join(WORK, "corpus.parquet")
    texts = make_sentences(args.rows)
    pq.write_table(pa.table({"id": [f"s{i}" for i in range(len(texts))], "text": texts}), source)
    model = minilm_folder()
    started, load_start = time.time(), os.getloadavg()

    st = sentence_transformers.SentenceTransformer(model, device="cpu")
    rates: dict[str, list[float]] = {"local": [], "st": []}
    for rep in range(args.repeats):
        for name in (["local", "st"] if rep % 2 == 0 else ["st", "local"]):
            target = os.path.join(WORK, f"{name}.parquet")
            t0 = time.perf_counter()
            if name == "local":
                batch.embed(model, source, target, id_column="id", show_progress_bar=False)
            else:
                sentence_transformers_loop(st, source, target)
            rate = args.rows / (time.perf_counter() - t0)
            rates[name].append(rate)
            print(f"rep {rep} {name}: {rate:.1f} rows/s", flush=True)

    ray_rates = {}
    if not args.no_ray:
        import ray

        ray.init(num_cpus=THREADS, include_dashboard=False, log_to_driver=False)
        for workers in (1, 2):
            target = os.path.join(WORK, f"ray{workers}.parquet")
            t0 = time.perf_counter()
            batch.embed(model, source, target, id_column="id", engine="ray", num_workers=workers)
            ray_rates[workers] = args.rows / (time.perf_counter() - t0)
            print(f"ray {workers} worker(s): {ray_rates[workers]:.1f} rows/s", flush=True)
            shutil.rmtree(target)
        ray.shutdown()

    local, theirs = statistics.median(rates["local"]), statistics.median(rates["st"])
    rows = [f"| `pretrained embed` local engine (parts, resume, batch 32) | {fmt(rates['local'])} | "
            f"{local / theirs:.2f} |",
            f"| sentence-transformers: read, `encode`, write (batch 32) | {fmt(rates['st'])} | 1.00 |"]
    rows += [f"| `pretrained embed --engine ray`, {w} worker(s), 1 thread each | {r:.1f} | {r / theirs:.2f} |"
             for w, r in ray_rates.items()]
    minutes = (time.time() - started) / 60
    section = "\n".join([
        "## Corpus-scale embedding (bench/batch.py)",
        "",
        f"Generated by `python bench/batch.py {' '.join(sys.argv[1:])}`".rstrip() +
        f" on {datetime.datetime.now():%Y-%m-%d %H:%M}, in {minutes:.1f} minutes.",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {THREADS} threads; "
        f"torch {torch.__version__}, sentence-transformers {sentence_transformers.__version__}, "
        f"pretrained {pretrained.__version__}",
        f"- {args.rows:,} sentences of 5–200 words, the real all-MiniLM-L6-v2 (max_seq_length 256); load average "
        f"at start {'/'.join(f'{x:.2f}' for x in load_start)}",
        f"- Rows/s of the whole job (read, embed, write), median (min–max) of {args.repeats} alternating "
        "repetitions; Ray once per worker count, on a local 2-CPU cluster; ratio against sentence-transformers",
        "",
        "| job | rows/s | ratio |",
        "|---|---|---|",
        *rows,
    ])
    if args.write:
        section = results.write_section("batch", section)
    print(section)


if __name__ == "__main__":
    main()
