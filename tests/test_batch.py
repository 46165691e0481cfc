"""Corpus-scale jobs (pretrained.batch and `pretrained embed|classify|generate`): input and output formats, stdin,
resume after a kill, bad rows, an empty input, and the Ray engine against the local one.

The numbers are checked against the library's own offline results (SentenceTransformer.encode, a classifier's
forward, generate()), which their own tests check against transformers and sentence-transformers.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pacsv = pytest.importorskip("pyarrow.csv")

from pretrained import batch  # noqa: E402

TEXTS = [f"sentence number {i} " + "word " * (i % 17) for i in range(150)] + ["café ☕ 東京", ""]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def _cli(*args, stdin: str | None = None, check=True, env=None):
    proc = subprocess.run([sys.executable, "-m", "pretrained.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _write_inputs(folder, texts, ids=None) -> dict[str, str]:
    """The same rows as .txt, .jsonl, .csv and .parquet files."""
    ids = ids if ids is not None else [f"id-{i}" for i in range(len(texts))]
    paths = {}
    paths["txt"] = str(folder / "in.txt")
    with open(paths["txt"], "w", encoding="utf-8") as f:
        f.writelines(t + "\n" for t in texts)
    paths["jsonl"] = str(folder / "in.jsonl")
    with open(paths["jsonl"], "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"doc": i, "body": t}, ensure_ascii=False) + "\n" for i, t in zip(ids, texts))
    table = pa.table({"doc": ids, "body": texts})
    paths["csv"] = str(folder / "in.csv")
    pacsv.write_csv(table, paths["csv"])
    paths["parquet"] = str(folder / "in.parquet")
    pq.write_table(table, paths["parquet"])
    return paths


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, minilm_dir):
    import transformers

    folder = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=37, id2label={0: "negative", 1: "neutral", 2: "positive"})
    transformers.BertForSequenceClassification(cfg).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(minilm_dir, name), folder)
    return str(folder)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("gpt2")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(TEXTS * 3, trainer=trainer)
    backend.model.save(str(folder))
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=backend.get_vocab_size(),
                                  n_positions=64, bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(folder)
    return str(folder)


def _read(path: str) -> list[dict]:
    if path.endswith(".parquet"):
        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _reference_classes(classifier_dir, texts):
    from pretrained import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir)
    tok = AutoTokenizer.from_pretrained(classifier_dir)
    with torch.inference_mode():
        probs = torch.cat([model(**tok(texts[i:i + 1], return_tensors="pt")).logits.softmax(-1)
                           for i in range(len(texts))])
    return probs


# -- formats -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["txt", "jsonl", "csv", "parquet"])
@pytest.mark.parametrize("out", ["parquet", "jsonl"])
def test_classify_reads_each_format_and_writes_each_output(classifier_dir, tmp_path, fmt, out):
    paths = _write_inputs(tmp_path, TEXTS)
    target = str(tmp_path / f"out.{out}")
    id_column = None if fmt == "txt" else "doc"
    summary = batch.classify(classifier_dir, paths[fmt], target, text_column="text" if fmt == "txt" else "body",
                             id_column=id_column, batch_size=16, part_size=50, show_progress_bar=False)
    rows = _read(target)
    assert summary.rows == len(TEXTS) == len(rows) and not summary.failed
    assert not os.path.exists(target + ".parts")
    if id_column:
        assert [r["doc"] for r in rows] == [f"id-{i}" for i in range(len(TEXTS))]
    probs = _reference_classes(classifier_dir, TEXTS)
    got = torch.tensor([r["scores"] for r in rows])
    assert (got - probs).abs().max() < 1e-5
    labels = ["negative", "neutral", "positive"]
    assert [r["label"] for r in rows] == [labels[i] for i in probs.argmax(-1).tolist()]


def test_a_folder_or_glob_reads_its_files_in_name_order(classifier_dir, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for k, chunk in enumerate([TEXTS[:40], TEXTS[40:]]):
        with open(folder / f"part{k}.txt", "w", encoding="utf-8") as f:
            f.writelines(t + "\n" for t in chunk)
    for source in (str(folder), str(folder / "part*.txt")):
        target = str(tmp_path / "out.jsonl")
        batch.classify(classifier_dir, source, target, part_size=30, show_progress_bar=False)
        single = str(tmp_path / "single.jsonl")
        with open(tmp_path / "all.txt", "w", encoding="utf-8") as f:
            f.writelines(t + "\n" for t in TEXTS)
        batch.classify(classifier_dir, str(tmp_path / "all.txt"), single, part_size=30, show_progress_bar=False)
        assert _read(target) == _read(single)


def test_embed_uses_the_checkpoints_pooling_and_writes_npy_parquet_jsonl(minilm_dir, tmp_path):
    from pretrained import SentenceTransformer

    paths = _write_inputs(tmp_path, TEXTS)
    ref = SentenceTransformer(minilm_dir).encode(TEXTS, normalize_embeddings=True)
    for out in ("npy", "parquet", "jsonl"):
        target = str(tmp_path / f"emb.{out}")
        batch.embed(minilm_dir, paths["csv"], target, text_column="body", id_column=None if out == "npy" else "doc",
                    normalize=True, part_size=64, show_progress_bar=False)
        if out == "npy":
            got = np.load(target)
        else:
            rows = _read(target)
            assert [r["doc"] for r in rows] == [f"id-{i}" for i in range(len(TEXTS))]
            got = np.array([r["embedding"] for r in rows], dtype=np.float32)
        assert got.shape == (len(TEXTS), 384) and np.abs(got - ref).max() < 1e-5
    schema = pq.read_schema(str(tmp_path / "emb.parquet"))
    assert schema.field("embedding").type == pa.list_(pa.float32(), 384)  # fixed-size list


def test_generate_equals_offline_generate_and_is_cli_driven(gpt2_dir, tmp_path):
    from pretrained import AutoModelForCausalLM, AutoTokenizer

    prompts = ["sentence number 3", "word word", "café"]
    src = tmp_path / "prompts.txt"
    src.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    target = str(tmp_path / "gen.jsonl")
    _cli("generate", gpt2_dir, str(src), target, "--max-new-tokens", "6", "--batch-size", "2", "--no-progress")
    model, tok = AutoModelForCausalLM.from_pretrained(gpt2_dir), AutoTokenizer.from_pretrained(gpt2_dir)
    expected = []
    for p in prompts:  # one at a time, unpadded: batching must not change greedy tokens
        ids = tok(p, return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=6, pad_token_id=0)
        expected.append(tok.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True))
    assert [r["generated_text"] for r in _read(target)] == expected


# -- stdin, progress and summary -------------------------------------------------------------------------------
def test_stdin_input_and_the_summary_line(classifier_dir, tmp_path):
    target = str(tmp_path / "out.parquet")
    proc = _cli("classify", classifier_dir, "-", target, "--no-progress", stdin="\n".join(TEXTS[:20]) + "\n")
    assert len(_read(target)) == 20
    assert "20 rows in" in proc.stderr and "rows/s" in proc.stderr and "out.parquet" in proc.stderr


def test_progress_bar_shows_rows_per_second(classifier_dir, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    batch.classify(classifier_dir, str(src), str(tmp_path / "o.parquet"), part_size=50, show_progress_bar=True)
    err = capsys.readouterr().err
    assert f"{len(TEXTS)}/{len(TEXTS)}" in err and "rows/s" in err


# -- resume ---------------------------------------------------------------------------------------------------
KILLER = textwrap.dedent("""
    import os, signal, sys
    from pretrained import batch
    written = []
    real = batch._write_atomic
    def write_then_die(path, write):
        real(path, write)
        if os.path.basename(path).startswith("part-"):
            written.append(path)
            if len(written) == int(sys.argv[4]):
                os.kill(os.getpid(), signal.SIGKILL)   # a real kill: no cleanup, no finally blocks
    batch._write_atomic = write_then_die
    batch.classify(sys.argv[1], sys.argv[2], sys.argv[3], part_size=25, show_progress_bar=False)
""")


def test_resume_after_a_kill_gives_the_uninterrupted_output(classifier_dir, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    whole = str(tmp_path / "whole.parquet")
    batch.classify(classifier_dir, str(src), whole, part_size=25, show_progress_bar=False)

    target = str(tmp_path / "resumed.parquet")
    proc = subprocess.run([sys.executable, "-c", KILLER, classifier_dir, str(src), target, "3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert not os.path.exists(target)
    assert sorted(os.listdir(target + ".parts")) == ["job.json", "part-000000.parquet", "part-000001.parquet",
                                                     "part-000002.parquet"]
    rerun = _cli("classify", classifier_dir, str(src), target, "--part-size", "25", "--no-progress")
    assert "3 part(s) reused" in rerun.stderr
    assert pq.read_table(target).equals(pq.read_table(whole))  # same rows, once each, same numbers
    assert not os.path.exists(target + ".parts")


def test_parts_of_a_different_job_are_not_reused(classifier_dir, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    target = str(tmp_path / "out.parquet")
    subprocess.run([sys.executable, "-c", KILLER, classifier_dir, str(src), target, "2"], timeout=300)
    src.write_text("\n".join(reversed(TEXTS)) + "\n", encoding="utf-8")  # the input changed
    summary = batch.classify(classifier_dir, str(src), target, part_size=25, show_progress_bar=False)
    assert summary.parts_reused == 0
    probs = _reference_classes(classifier_dir, list(reversed(TEXTS)))
    assert (torch.tensor([r["scores"] for r in _read(target)]) - probs).abs().max() < 1e-5


# -- bad rows, bad options, empty input -------------------------------------------------------------------------
def _bad_jsonl(tmp_path) -> str:
    path = tmp_path / "bad.jsonl"
    rows = [{"id": "a", "text": "fine"}, {"id": "b", "text": 42}, {"id": "c", "text": None},
            {"id": "d", "text": "also fine"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_a_bad_row_stops_the_job_naming_its_id(classifier_dir, tmp_path):
    with pytest.raises(batch.BatchError, match=r"row 'b': text is int 42, not a string.*on-error skip"):
        batch.classify(classifier_dir, _bad_jsonl(tmp_path), str(tmp_path / "o.parquet"), id_column="id")
    proc = _cli("classify", classifier_dir, _bad_jsonl(tmp_path), str(tmp_path / "o.parquet"), "--id-column", "id",
                check=False)
    assert proc.returncode != 0 and "error: row 'b'" in proc.stderr and "Traceback" not in proc.stderr


def test_skip_reports_bad_rows_and_goes_on(classifier_dir, tmp_path):
    target = str(tmp_path / "o.jsonl")
    proc = _cli("classify", classifier_dir, _bad_jsonl(tmp_path), target, "--id-column", "id", "--on-error", "skip")
    assert [r["id"] for r in _read(target)] == ["a", "d"]
    assert "skipped row 'b'" in proc.stderr and "skipped row 'c'" in proc.stderr and "2 row(s) failed" in proc.stderr


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p / "missing.txt"), "does not exist"),
    (lambda p: (p / "x.xml").write_text("a") and str(p / "x.xml"), "is not a .txt"),
    (lambda p: (p / "x.jsonl").write_text('{"text": "a"}\nnot json\n') and str(p / "x.jsonl"), r"x.jsonl, line 2: not JSON"),
    (lambda p: (p / "x.jsonl").write_text('{"body": "a"}\n') and str(p / "x.jsonl"), r"line 1: no column 'text'"),
    (lambda p: (p / "x.csv").write_text("body\na\n") and str(p / "x.csv"), r"has no column 'text'.*--text-column"),
])
def test_bad_inputs_are_named(classifier_dir, tmp_path, make, message):
    with pytest.raises(batch.BatchError, match=message):
        batch.classify(classifier_dir, make(tmp_path), str(tmp_path / "o.parquet"))


def test_npy_refuses_to_skip_rows(minilm_dir, tmp_path):
    """A .npy has no ids: skipping a row would shift every later one, so the combination is refused up front."""
    with pytest.raises(batch.BatchError, match=r"o.npy' with on_error='skip'.*write .parquet or .jsonl"):
        batch.embed(minilm_dir, _bad_jsonl(tmp_path), str(tmp_path / "o.npy"), on_error="skip")


def _read_folder(folder) -> list[dict]:
    rows = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


@pytest.mark.parametrize("kwargs, message", [
    (dict(output="o.csv"), "must end in one of .parquet, .jsonl, .npy"),
    (dict(output="o.npy"), ".npy holds embeddings only"),
    (dict(batch_size=0), "batch_size=0 must be a positive integer"),
    (dict(on_error="ignore"), "on_error='ignore'"),
    (dict(engine="spark"), "engine='spark'"),
])
def test_bad_options_are_named(classifier_dir, tmp_path, kwargs, message):
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    output = str(tmp_path / kwargs.pop("output", "o.parquet"))
    with pytest.raises(batch.BatchError, match=message):
        batch.classify(classifier_dir, str(src), output, **kwargs)


def test_an_empty_input_gives_an_empty_output(classifier_dir, tmp_path):
    src = tmp_path / "empty.txt"
    src.write_text("")
    target = str(tmp_path / "o.parquet")
    summary = batch.classify(classifier_dir, str(src), target, show_progress_bar=False)
    assert summary.rows == 0 and pq.read_table(target).num_rows == 0
    assert pq.read_table(target).column_names == ["label", "score", "scores"]


# -- Ray ------------------------------------------------------------------------------------------------------
def test_ray_engine_equals_the_local_engine(minilm_dir, tmp_path):
    ray = pytest.importorskip("ray")
    texts = [f"row {i}: " + " ".join(["token"] * (i % 40)) + f" end {i}" for i in range(2000)]
    src = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": texts}), str(src))
    local = str(tmp_path / "local.parquet")
    batch.embed(minilm_dir, str(src), local, id_column="id", show_progress_bar=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = str(tmp_path / "ray.parquet")
        summary = batch.embed(minilm_dir, str(src), remote, id_column="id", engine="ray", num_workers=2)
        bad = tmp_path / "bad.parquet"  # rows b and c have no text
        pq.write_table(pa.table({"id": list("abcd"), "text": ["fine", None, None, "also fine"]}), str(bad))
        skipped = batch.embed(minilm_dir, str(bad), str(tmp_path / "ray-skip.jsonl"), id_column="id",
                              engine="ray", num_workers=1, on_error="skip")
        # a URL output (s3://, gs://, ...; file:// here) is written by Ray's writers and not listed afterwards:
        # the rows and the skipped are counted by the actors, without running the job twice
        url = batch.embed(minilm_dir, str(bad), (tmp_path / "ray-skip-url.parquet").as_uri(), id_column="id",
                          engine="ray", num_workers=1, on_error="skip")
    finally:
        ray.shutdown()
    assert skipped.rows == 2 and skipped.skipped == 2 and "2 row(s) failed and were skipped" in str(skipped)
    assert sorted(r["id"] for r in _read_folder(tmp_path / "ray-skip.jsonl")) == ["a", "d"]
    assert url.rows == 2 and url.skipped == 2
    assert sorted(pq.read_table(tmp_path / "ray-skip-url.parquet").column("id").to_pylist()) == ["a", "d"]
    assert summary.skipped == 0
    assert os.path.isdir(remote) and summary.rows == len(texts)
    got = pq.read_table(remote).to_pylist()  # Ray wrote a folder of parquet files
    want = pq.read_table(local).to_pylist()
    assert sorted(r["id"] for r in got) == [r["id"] for r in sorted(want, key=lambda r: r["id"])]
    by_id = {r["id"]: r["embedding"] for r in got}
    diffs = [np.abs(np.array(by_id[r["id"]]) - np.array(r["embedding"])).max() for r in want]
    assert max(diffs) < 1e-5
