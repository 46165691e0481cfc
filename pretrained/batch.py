"""Corpus-scale jobs: embed, classify or generate over a file of texts, locally or on a Ray cluster.

    embed(model, input, output)       sentence embeddings (the checkpoint's own pooling, length-sorted batches)
    classify(model, input, output)    a label and its probability per text (sequence-classification heads)
    generate(model, input, output)    a completion per prompt (causal and seq2seq language models)

Input: `.txt` (a text a line), `.jsonl`, `.csv` or `.parquet` files, a folder or glob of them, or "-" for stdin (a
text a line). Output: `.parquet` (embeddings as a fixed-size list column), `.jsonl`, or `.npy` for embeddings.

Local engine: rows are cut into parts of `part_size` rows in input order; each part is computed and written to
`<output>.parts/` through a temporary file and an atomic rename, beside a manifest that fingerprints the job. A
rerun of the same job after a crash skips the parts already written; the finished output is assembled from the
parts (again atomically) and the parts folder removed. So the output of an interrupted-then-resumed run is the
output of an uninterrupted one.

Ray engine (`engine="ray"`, the `ray` extra): Ray Data reads the input, an actor pool (each actor loads the model
once) runs `map_batches`, and Ray's writers write OUTPUT as a folder of files. `ray_address="auto"` joins a running
cluster; without an address a local cluster starts.

pyarrow (the `batch` extra) reads and writes the files. `.jsonl` lines are parsed one by one with `json`, so that
a row with a bad value is reported with its line number instead of failing the whole file.
"""
from __future__ import annotations

import glob as globlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

logger = logging.getLogger(__name__)

INPUT_SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet")
OUTPUT_SUFFIXES = (".parquet", ".jsonl", ".npy")
TASKS = ("embed", "classify", "generate")
_MANIFEST = "job.json"


class BatchError(ValueError):
    """A batch job cannot run or a row failed with on_error="fail"; the message names the file, row or option."""


def _require(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise BatchError(f"this needs {module.split('.')[0]}: pip install \"pretrained[{extra}]\"") from None


# -- options and results -----------------------------------------------------------------------------------
@dataclass
class Options:
    """What a job computes; everything here is part of its fingerprint (resume needs the same options)."""

    task: str
    model: str
    text_column: str = "text"
    id_column: Optional[str] = None
    batch_size: int = 32
    max_length: Optional[int] = None
    normalize: bool = False
    prompt_name: Optional[str] = None
    raw: bool = False  # generate: prompts as they are, without the chat template
    generation: dict = field(default_factory=dict)


@dataclass
class Summary:
    rows: int
    failed: list[tuple[Any, str]]
    seconds: float
    output: str
    output_bytes: int
    parts_reused: int = 0
    skipped: int = 0  # rows the Ray engine skipped (on_error="skip"); their ids and reasons are in the workers' logs

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        text = (f"{self.rows} rows in {self.seconds:.1f} s ({self.rows_per_second:.1f} rows/s) -> {self.output} "
                f"({_size(self.output_bytes)})")
        if self.parts_reused:
            text += f"; {self.parts_reused} part(s) reused from an earlier run"
        if self.failed:
            text += f"; {len(self.failed)} row(s) failed and were skipped"
        if self.skipped:
            text += f"; {self.skipped} row(s) failed and were skipped (the Ray workers' logs name them)"
        return text


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


# -- the models: a callable per task, shared by both engines --------------------------------------------------
class Runner:
    """Loads the model once; `run(texts)` returns the result columns for those texts, in their order."""

    def __init__(self, options: Options):
        self.options = options

    def run(self, texts: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    def __call__(self, batch):
        """Ray's map_batches entry point: a pyarrow table in, a pyarrow table out (bad rows per on_error)."""
        pa = _require("pyarrow", "batch")
        table = batch if isinstance(batch, pa.Table) else pa.table(batch)
        texts, ids = table.column(self.options.text_column).to_pylist(), None
        if self.options.id_column:
            ids = table.column(self.options.id_column).to_pylist()
        good, failed = _check_rows(texts, ids, 0)
        if failed and getattr(self, "on_error", "fail") == "fail":
            raise BatchError(_row_error(failed[0]))
        columns = {}
        if ids is not None:
            columns[self.options.id_column] = pa.array([ids[i] for i in good])
        columns.update(_arrow_columns(self.run([texts[i] for i in good]), pa))
        return pa.table(columns)


class EmbedRunner(Runner):
    def __init__(self, options: Options):
        super().__init__(options)
        from .sentence import SentenceTransformer

        self.model = SentenceTransformer(options.model)
        if options.max_length:
            self.model.max_seq_length = options.max_length

    def run(self, texts):
        emb = self.model.encode(texts, batch_size=self.options.batch_size, prompt_name=self.options.prompt_name,
                                normalize_embeddings=self.options.normalize, convert_to_numpy=True,
                                show_progress_bar=False)
        return {"embedding": emb.reshape(len(texts), -1)}


class ClassifyRunner(Runner):
    def __init__(self, options: Options):
        super().__init__(options)
        from .auto import AutoModelForSequenceClassification
        from .tokenization import AutoTokenizer

        self.model = AutoModelForSequenceClassification.from_pretrained(options.model)
        self.tokenizer = AutoTokenizer.from_pretrained(options.model)
        limit = getattr(self.model.config, "max_position_embeddings", None) or self.tokenizer.model_max_length
        self.max_length = min(options.max_length or limit, limit, self.tokenizer.model_max_length)

    def run(self, texts):
        import torch

        cfg = self.model.config
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # little padding per batch
        labels, scores = [None] * len(texts), [None] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(order), self.options.batch_size):
                idx = order[start:start + self.options.batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                logits = self.model(**{k: v for k, v in enc.items()
                                       if k in ("input_ids", "attention_mask", "token_type_ids")}).logits.float()
                probs = logits.sigmoid() if cfg.problem_type == "multi_label_classification" or cfg.num_labels == 1 \
                    else logits.softmax(-1)
                best = probs.argmax(-1)
                for row, i in enumerate(idx):
                    labels[i] = cfg.id2label.get(int(best[row]), f"LABEL_{int(best[row])}")
                    scores[i] = probs[row].tolist()
        return {"label": labels, "score": [max(s) for s in scores], "scores": scores}


class GenerateRunner(Runner):
    def __init__(self, options: Options):
        super().__init__(options)
        from .auto import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, TASKS as AUTO_TASKS
        from .tokenization import AutoTokenizer

        config = AutoConfig.from_pretrained(options.model)
        self.seq2seq = config.model_type in AUTO_TASKS["AutoModelForSeq2SeqLM"]
        cls = AutoModelForSeq2SeqLM if self.seq2seq else AutoModelForCausalLM
        self.model = cls.from_pretrained(options.model, config=config)
        self.tokenizer = AutoTokenizer.from_pretrained(options.model)
        if not self.seq2seq:
            self.tokenizer.padding_side = "left"  # decoder-only prompts end where generation starts
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def _prompt(self, text: str) -> str:
        template = getattr(self.tokenizer, "chat_template", None)
        if self.options.raw or self.seq2seq or not template:
            return text
        return self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                  add_generation_prompt=True)

    def run(self, texts):
        import torch

        gen = dict(self.options.generation)
        seed = gen.pop("seed", None)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = [None] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(order), self.options.batch_size):
                idx = order[start:start + self.options.batch_size]
                if seed is not None:
                    torch.manual_seed(seed + start)
                prompts = [self._prompt(texts[i]) for i in idx]
                templated = prompts != [texts[i] for i in idx]
                enc = self.tokenizer(prompts, padding=True, return_tensors="pt",
                                     add_special_tokens=not templated)
                ids = self.model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **gen)
                new = ids if self.seq2seq else ids[:, enc["input_ids"].shape[1]:]
                for row, i in enumerate(idx):
                    out[i] = self.tokenizer.decode(new[row].tolist(), skip_special_tokens=True)
        return {"generated_text": out}


RUNNERS: dict[str, type[Runner]] = {"embed": EmbedRunner, "classify": ClassifyRunner, "generate": GenerateRunner}


def _arrow_columns(result: dict[str, Any], pa) -> dict[str, Any]:
    """Result columns as pyarrow arrays; embeddings become a fixed-size list<float32> column."""
    import numpy as np

    columns = {}
    for name, values in result.items():
        if name == "embedding":
            emb = np.ascontiguousarray(values, dtype=np.float32)
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1]) \
                if len(emb) else pa.array([], type=pa.list_(pa.float32(), emb.shape[1] if emb.ndim == 2 else 0))
        elif name == "scores":
            columns[name] = pa.array(values, type=pa.list_(pa.float32()))
        elif name == "score":
            columns[name] = pa.array(values, type=pa.float32())
        else:
            columns[name] = pa.array(values, type=pa.string())
    return columns


# -- reading -------------------------------------------------------------------------------------------------
def input_files(source: str) -> list[str]:
    """The files a job reads: "-" (stdin), a file, a folder (its supported files, sorted) or a glob."""
    if source == "-":
        return ["-"]
    if os.path.isdir(source):
        files = sorted(os.path.join(source, f) for f in os.listdir(source) if f.endswith(INPUT_SUFFIXES))
        if not files:
            raise BatchError(f"folder '{source}' holds no {', '.join(INPUT_SUFFIXES)} files")
        return files
    if any(ch in source for ch in "*?["):
        files = sorted(f for f in globlib.glob(source) if os.path.isfile(f))
        if not files:
            raise BatchError(f"no files match '{source}'")
    elif not os.path.exists(source):
        raise BatchError(f"input '{source}' does not exist")
    else:
        files = [source]
    for f in files:
        if not f.endswith(INPUT_SUFFIXES):
            raise BatchError(f"input '{f}' is not a {', '.join(INPUT_SUFFIXES)} file")
    return files


def read_rows(files: list[str], options: Options, chunk: int = 8192) -> Iterator[tuple[list, Optional[list], str]]:
    """(texts, ids or None, where) chunks in input order; `where` names the file for messages."""
    for path in files:
        if path == "-":
            yield from _chunks(((line.rstrip("\r\n"), None) for line in sys.stdin), chunk, "stdin", None)
        elif path.endswith(".txt"):
            with open(path, encoding="utf-8") as f:
                yield from _chunks(((line.rstrip("\r\n"), None) for line in f), chunk, path, None)
        elif path.endswith(".jsonl"):
            yield from _chunks(_jsonl_rows(path, options), chunk, path, options.id_column)
        else:
            yield from _arrow_chunks(path, options, chunk)


def _chunks(rows, chunk: int, where: str, id_column):
    texts, ids = [], []
    for text, row_id in rows:
        texts.append(text)
        ids.append(row_id)
        if len(texts) == chunk:
            yield texts, (ids if id_column else None), where
            texts, ids = [], []
    if texts:
        yield texts, (ids if id_column else None), where


def _jsonl_rows(path: str, options: Options):
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise BatchError(f"{path}, line {n}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise BatchError(f"{path}, line {n}: a JSON object is expected, got {type(row).__name__}")
            for column in filter(None, (options.text_column, options.id_column)):
                if column not in row:
                    raise BatchError(f"{path}, line {n}: no column '{column}' (it has {', '.join(row)})")
            yield row[options.text_column], row.get(options.id_column) if options.id_column else None


def _arrow_chunks(path: str, options: Options, chunk: int):
    pa = _require("pyarrow", "batch")
    columns = [c for c in (options.text_column, options.id_column) if c]
    try:
        if path.endswith(".parquet"):
            pq = _require("pyarrow.parquet", "batch")
            source = pq.ParquetFile(path)
            names = source.schema_arrow.names
            _check_columns(path, names, columns)
            batches = source.iter_batches(batch_size=chunk, columns=columns)
        else:
            csv = _require("pyarrow.csv", "batch")
            types = {options.text_column: pa.string()}
            reader = csv.open_csv(path, convert_options=csv.ConvertOptions(column_types=types,
                                                                           strings_can_be_null=False))
            _check_columns(path, reader.schema.names, columns)
            batches = reader
        for batch in batches:
            texts = batch.column(batch.schema.get_field_index(options.text_column)).to_pylist()
            ids = batch.column(batch.schema.get_field_index(options.id_column)).to_pylist() \
                if options.id_column else None
            yield texts, ids, path
    except (pa.ArrowInvalid, OSError) as e:
        raise BatchError(f"cannot read '{path}': {e}") from None


def _check_columns(path: str, names: list[str], wanted: list[str]) -> None:
    for column in wanted:
        if column not in names:
            raise BatchError(f"'{path}' has no column '{column}' (it has {', '.join(names)}); "
                             f"choose one with --text-column / --id-column")


def _check_rows(texts: list, ids: Optional[list], offset: int) -> tuple[list[int], list[tuple[Any, str]]]:
    """Indices of usable rows, and (id, reason) of the others (id: the id column's value, else the row number)."""
    good, failed = [], []
    for i, text in enumerate(texts):
        if isinstance(text, str):
            good.append(i)
        else:
            row_id = ids[i] if ids is not None else offset + i
            failed.append((row_id, f"text is {type(text).__name__} {text!r:.40}, not a string"))
    return good, failed


def _row_error(failure: tuple[Any, str]) -> str:
    row_id, reason = failure
    return f"row {row_id!r}: {reason} (pass on_error='skip' / --on-error skip to skip such rows)"


# -- the local engine: parts, resume, assembly ---------------------------------------------------------------
def fingerprint(options: Options, files: list[str], part_size: int, stdin_digest: Optional[str] = None) -> str:
    """Identity of a job: its options, part size and the input files' names, sizes and modification times (for
    stdin, a digest of what it held)."""
    stats = [["-", stdin_digest]] if stdin_digest else [[f, os.path.getsize(f), os.stat(f).st_mtime_ns] for f in files]
    blob = json.dumps([options.__dict__, part_size, stats], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _parts_folder(output: str) -> str:
    return output.rstrip("/\\") + ".parts"


def _write_atomic(path: str, write: Callable[[str], None]) -> None:
    """write(tmp) then fsync and rename onto `path`: a reader sees the old file, the new one, never a part."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _open_parts(output: str, job_id: str) -> str:
    """The parts folder of this job: reused when its manifest names the same job, else started afresh."""
    parts = _parts_folder(output)
    manifest = os.path.join(parts, _MANIFEST)
    if os.path.isdir(parts):
        try:
            with open(manifest, encoding="utf-8") as f:
                same = json.load(f).get("job") == job_id
        except (OSError, ValueError):
            same = False
        if same:
            for name in os.listdir(parts):  # temporaries of a killed write
                if name.startswith(".tmp-"):
                    os.unlink(os.path.join(parts, name))
            return parts
        logger.warning("%s holds parts of a different job (other options or input); starting afresh", parts)
        shutil.rmtree(parts)
    os.makedirs(parts)
    _write_atomic(manifest, lambda tmp: _dump_json(tmp, {"job": job_id}))
    return parts


def _dump_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def _part_path(parts: str, k: int) -> str:
    return os.path.join(parts, f"part-{k:06d}.parquet")


def _parts(files: list[str], options: Options, part_size: int) -> Iterator[tuple[int, list, Optional[list], int]]:
    """(part number, texts, ids, first row number) for consecutive runs of `part_size` rows across all files."""
    k, texts, ids, first = 0, [], [], 0
    for chunk_texts, chunk_ids, _ in read_rows(files, options):
        texts.extend(chunk_texts)
        if options.id_column:
            ids.extend(chunk_ids)
        while len(texts) >= part_size:
            yield k, texts[:part_size], ids[:part_size] if options.id_column else None, first
            k, first = k + 1, first + part_size
            texts, ids = texts[part_size:], ids[part_size:] if options.id_column else []
    if texts:
        yield k, texts, ids if options.id_column else None, first


def _count_rows(files: list[str]) -> Optional[int]:
    """Rows in the input, for the progress bar's ETA (None for stdin)."""
    if "-" in files:
        return None
    total = 0
    for path in files:
        if path.endswith(".parquet"):
            total += _require("pyarrow.parquet", "batch").ParquetFile(path).metadata.num_rows
        else:
            with open(path, "rb") as f:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
                f.seek(max(0, f.tell() - 1))
                lines += 1 if f.tell() and f.read(1) != b"\n" else 0
            total += lines - (1 if path.endswith(".csv") else 0)
    return total


def run_local(options: Options, input: str, output: str, *, part_size: int = 4096, on_error: str = "fail",
              show_progress_bar: Optional[bool] = None) -> Summary:
    pa = _require("pyarrow", "batch")
    pq = _require("pyarrow.parquet", "batch")
    files = input_files(input)
    start = time.perf_counter()
    # stdin cannot be read twice: its rows are spooled to a file first, so that a part is reproducible.
    spool, digest = None, None
    if files == ["-"]:
        spool = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8")
        shutil.copyfileobj(sys.stdin, spool)
        spool.close()
        files = [spool.name]
        with open(spool.name, "rb") as f:
            h = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            digest = h.hexdigest()
    try:
        parts = _open_parts(output, fingerprint(options, files, part_size, digest))
        runner, done, reused, failed, rows = None, [], 0, [], 0
        bar = _progress(show_progress_bar, _count_rows(files))
        for k, texts, ids, first in _parts(files, options, part_size):
            path = _part_path(parts, k)
            good, bad = _check_rows(texts, ids, first)
            if bad and on_error == "fail":
                raise BatchError(_row_error(bad[0]))
            failed += bad
            if not os.path.exists(path):
                runner = runner or RUNNERS[options.task](options)
                columns = {}
                if ids is not None:
                    columns[options.id_column] = pa.array([ids[i] for i in good])
                columns.update(_arrow_columns(runner.run([texts[i] for i in good]), pa))
                table = pa.table(columns)
                _write_atomic(path, lambda tmp: pq.write_table(table, tmp))
            else:
                reused += 1
            done.append(path)
            rows += len(good)
            bar.update(len(texts))
        bar.close()
        for row_id, reason in failed:
            logger.warning("skipped row %r: %s", row_id, reason)
        if runner is None and not done and options.task == "embed":
            logger.warning("the input holds no rows")
        assemble(done, output, options)
        shutil.rmtree(parts)
    finally:
        if spool is not None:
            os.unlink(spool.name)
    return Summary(rows=rows, failed=failed, seconds=time.perf_counter() - start, output=output,
                   output_bytes=os.path.getsize(output), parts_reused=reused)


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(show: Optional[bool], total: Optional[int]):
    """A tqdm bar (rows, rows/s, ETA) on stderr: shown when asked, or by default when stderr is a terminal."""
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="rows", unit_scale=True, dynamic_ncols=True)


def assemble(parts: list[str], output: str, options: Options) -> None:
    """Join the parts, in order, into OUTPUT in the format its suffix names, atomically."""
    pq = _require("pyarrow.parquet", "batch")
    tables = [pq.read_table(p) for p in parts]
    if output.endswith(".parquet"):
        def write(tmp):
            if not tables:
                pq.write_table(_empty_table(options), tmp)
                return
            with pq.ParquetWriter(tmp, tables[0].schema) as writer:
                for t in tables:
                    writer.write_table(t)
    elif output.endswith(".jsonl"):
        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                for t in tables:
                    for row in t.to_pylist():
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        import numpy as np

        def write(tmp):
            if tables and any(t.num_rows for t in tables):
                dim = next(t for t in tables if t.num_rows).schema.field("embedding").type.list_size
            else:
                dim = 0
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                            shape=(sum(t.num_rows for t in tables), dim))
            row = 0
            for t in tables:
                if t.num_rows:
                    flat = t.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
                    arr[row:row + t.num_rows] = flat.reshape(t.num_rows, dim)
                    row += t.num_rows
            arr.flush()
            del arr
    _write_atomic(output, write)


def _empty_table(options: Options):
    pa = _require("pyarrow", "batch")
    columns = {options.id_column: pa.array([], pa.string())} if options.id_column else {}
    names = {"embed": ["embedding"], "classify": ["label", "score", "scores"], "generate": ["generated_text"]}
    for name in names[options.task]:
        columns[name] = pa.array([], pa.list_(pa.float32()) if name in ("embedding", "scores") else
                                 pa.float32() if name == "score" else pa.string())
    return pa.table(columns)


# -- the Ray engine ------------------------------------------------------------------------------------------
def run_ray(options: Options, input: str, output: str, *, ray_address: Optional[str] = None,
            num_workers: Optional[int] = None, on_error: str = "fail", batch_rows: int = 1024) -> Summary:
    """The same job on Ray Data: Ray reads the input, an actor pool runs the model, Ray's writers write OUTPUT
    (a folder of files in the format its suffix names)."""
    ray = _require("ray", "ray")
    data = _require("ray.data", "ray")
    remote = "://" in output
    files = [input] if "://" in input else input_files(input)  # s3://, gs://...: Ray's readers list them
    if files == ["-"]:
        raise BatchError("the Ray engine reads files, not stdin: write the input to a file first")
    start = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=ray_address, ignore_reinit_error=True, log_to_driver=False,
                 **({} if ray_address else {"num_cpus": max(num_workers or 1, os.cpu_count() or 1)}))
    ctx = data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # output rows in input order, as the local engine writes them
    workers = num_workers or 1
    # The actors share the cluster's CPUs but one: Ray Data's own tasks (listing, reading, writing) need a whole
    # CPU, and actors holding every CPU would starve the reads that feed them.
    actor_cpus = max(0.1, (ray.cluster_resources().get("CPU", 1) - 1) / workers)
    # A small file is one block; cut it so that every actor gets work (order is kept: no shuffle).
    ds = _ray_read(data, files, options, blocks=4 * workers).repartition(4 * workers)
    # The actors report the rows they wrote and skipped as they go: counting the dataset afterwards would run the
    # whole pipeline (the model included) a second time, and counting the input would read it twice.
    counter = _ray_counter(ray)
    ds = ds.map_batches(_ray_runner(options, on_error, max(1, round(actor_cpus)), counter), batch_size=batch_rows,
                        batch_format="pyarrow", compute=data.ActorPoolStrategy(size=workers), num_cpus=actor_cpus)
    if not remote and os.path.exists(output):
        shutil.rmtree(output) if os.path.isdir(output) else os.unlink(output)
    if output.endswith(".parquet"):
        ds.write_parquet(output)
    elif output.endswith(".jsonl"):
        ds.write_json(output)
    else:
        ds.write_numpy(output, column="embedding")
    rows, skipped = ray.get(counter.totals.remote())
    ray.kill(counter)
    if remote:
        return Summary(rows=rows, failed=[], seconds=time.perf_counter() - start, output=output, output_bytes=0,
                       skipped=skipped)
    written = [os.path.join(output, f) for f in sorted(os.listdir(output))]
    return Summary(rows=sum(_rows_in(f) for f in written), failed=[], seconds=time.perf_counter() - start,
                   output=output, output_bytes=sum(os.path.getsize(f) for f in written), skipped=skipped)


def _rows_in(path: str) -> int:
    """Rows in one file Ray wrote (parquet, jsonl or npy)."""
    if path.endswith(".parquet"):
        return _require("pyarrow.parquet", "batch").ParquetFile(path).metadata.num_rows
    if path.endswith(".npy"):
        import numpy as np
        return int(np.load(path, mmap_mode="r").shape[0])
    if path.endswith((".json", ".jsonl")):
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    return 0  # not a data file (Ray writes none today)


def _ray_read(data, files: list[str], options: Options, blocks: int):
    suffixes = {os.path.splitext(f)[1] for f in files}
    if len(suffixes) > 1:
        raise BatchError(f"the Ray engine reads one format at a time; the input mixes {', '.join(sorted(suffixes))}")
    suffix = suffixes.pop()
    columns = [c for c in (options.id_column, options.text_column) if c]
    if suffix == ".txt":
        ds = data.read_text(files, override_num_blocks=blocks)
        return ds.rename_columns({"text": options.text_column}) if options.text_column != "text" else ds
    if suffix == ".jsonl":
        return data.read_json(files, lines=True, override_num_blocks=blocks).select_columns(columns)
    if suffix == ".csv":
        return data.read_csv(files, override_num_blocks=blocks).select_columns(columns)
    return data.read_parquet(files, override_num_blocks=blocks).select_columns(columns)


def _ray_counter(ray):
    """An actor that adds up the rows the runners wrote and skipped (it needs no CPU of its own)."""

    @ray.remote(num_cpus=0)
    class Counter:
        def __init__(self):
            self.rows = self.skipped = 0

        def add(self, rows: int, skipped: int) -> None:
            self.rows += rows
            self.skipped += skipped

        def totals(self) -> tuple[int, int]:
            return self.rows, self.skipped

    return Counter.remote()


def _ray_runner(options: Options, on_error: str, threads: int, counter):
    """A picklable actor class for map_batches: it builds the task's runner once per actor, and reports each
    batch's rows written and skipped to `counter` before handing the batch on (so the totals are complete once
    the write is)."""

    class Actor:
        def __init__(self):
            import torch

            torch.set_num_threads(threads)
            self.runner = RUNNERS[options.task](options)
            self.runner.on_error = on_error

        def __call__(self, batch):
            import ray

            out = self.runner(batch)
            ray.get(counter.add.remote(out.num_rows, batch.num_rows - out.num_rows))
            return out

    return Actor


# -- the API -------------------------------------------------------------------------------------------------
def _job(task: str, model: str, input: str, output: str, *, engine: str, part_size: int, on_error: str,
         show_progress_bar: Optional[bool], ray_address: Optional[str], num_workers: Optional[int],
         **option_values) -> Summary:
    if engine not in ("local", "ray"):
        raise BatchError(f"engine={engine!r}: choose 'local' or 'ray'")
    if on_error not in ("skip", "fail"):
        raise BatchError(f"on_error={on_error!r}: choose 'skip' or 'fail'")
    if not output.endswith(OUTPUT_SUFFIXES):
        raise BatchError(f"output '{output}' must end in one of {', '.join(OUTPUT_SUFFIXES)}")
    if output.endswith(".npy") and task != "embed":
        raise BatchError(f"output '{output}': .npy holds embeddings only; write {task} results to .parquet or .jsonl")
    if output.endswith(".npy") and on_error == "skip":
        raise BatchError(f"output '{output}' with on_error='skip': a .npy has no ids, so a skipped row would shift "
                         f"every later row; write .parquet or .jsonl (with id_column) to skip bad rows")
    for name in ("batch_size", "part_size"):
        value = part_size if name == "part_size" else option_values.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BatchError(f"{name}={value!r} must be a positive integer")
    options = Options(task=task, model=os.fspath(model), **option_values)
    if engine == "ray":
        return run_ray(options, os.fspath(input), os.fspath(output), ray_address=ray_address,
                       num_workers=num_workers, on_error=on_error)
    return run_local(options, os.fspath(input), os.fspath(output), part_size=part_size, on_error=on_error,
                     show_progress_bar=show_progress_bar)


def embed(model: str, input: str, output: str, *, text_column: str = "text", id_column: Optional[str] = None,
          batch_size: int = 32, max_length: Optional[int] = None, normalize: bool = False,
          prompt_name: Optional[str] = None, part_size: int = 4096, on_error: str = "fail",
          show_progress_bar: Optional[bool] = None, engine: str = "local", ray_address: Optional[str] = None,
          num_workers: Optional[int] = None) -> Summary:
    """Sentence embeddings of every text in `input`, written to `output` (see the module docstring)."""
    return _job("embed", model, input, output, engine=engine, part_size=part_size, on_error=on_error,
                show_progress_bar=show_progress_bar, ray_address=ray_address, num_workers=num_workers,
                text_column=text_column, id_column=id_column, batch_size=batch_size, max_length=max_length,
                normalize=normalize, prompt_name=prompt_name)


def classify(model: str, input: str, output: str, *, text_column: str = "text", id_column: Optional[str] = None,
             batch_size: int = 32, max_length: Optional[int] = None, part_size: int = 4096, on_error: str = "fail",
             show_progress_bar: Optional[bool] = None, engine: str = "local", ray_address: Optional[str] = None,
             num_workers: Optional[int] = None) -> Summary:
    """The label (`id2label`), its probability and all probabilities for every text in `input`."""
    return _job("classify", model, input, output, engine=engine, part_size=part_size, on_error=on_error,
                show_progress_bar=show_progress_bar, ray_address=ray_address, num_workers=num_workers,
                text_column=text_column, id_column=id_column, batch_size=batch_size, max_length=max_length)


def generate(model: str, input: str, output: str, *, text_column: str = "text", id_column: Optional[str] = None,
             batch_size: int = 8, raw: bool = False, part_size: int = 256, on_error: str = "fail",
             show_progress_bar: Optional[bool] = None, engine: str = "local", ray_address: Optional[str] = None,
             num_workers: Optional[int] = None, **generation) -> Summary:
    """A completion for every prompt in `input`; `generation` takes generate()'s options (max_new_tokens,
    do_sample, temperature, top_k, top_p, num_beams, repetition_penalty, no_repeat_ngram_size, seed)."""
    return _job("generate", model, input, output, engine=engine, part_size=part_size, on_error=on_error,
                show_progress_bar=show_progress_bar, ray_address=ray_address, num_workers=num_workers,
                text_column=text_column, id_column=id_column, batch_size=batch_size, raw=raw,
                generation={k: v for k, v in generation.items() if v is not None})
