"""Speed and memory of pretrained against transformers, measured alternately on the same machine in one run.

    .venv/bin/python bench/run.py            # the full run (about 30 minutes on 2 cores), writes bench/RESULTS.md
    .venv/bin/python bench/run.py --quick    # 2 repetitions instead of 5: a smoke test
    .venv/bin/python bench/run.py --only load,bert    # some sections (import, load, bert, gpt2, bart, qwen2, sentence)
    .venv/bin/python bench/run.py --mode exact        # compute figures in exact mode (default: the default mode)
A quick or partial run writes its table to bench/.work/RESULTS-partial.md, so RESULTS.md always holds a full run.

Import and from_pretrained figures run in fresh processes (bench/child.py), the two libraries alternating
ABBA...; forward and generation figures load both models in this process and alternate per repetition.
Each figure is the median of its repetitions with the min-max range, and the ratio pretrained/transformers
of the medians. The machine's limits (fp32 GEMM throughput, memory read bandwidth, reading the weights from
the page cache, torch's own import time and RSS) are measured in the same run.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

THREADS = 2
os.environ.update({"OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS),
                   "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                   "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"})

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import checkpoints  # noqa: E402
import results  # noqa: E402

CHILD = os.path.join(HERE, "child.py")
SECTIONS = ("import", "load", "bert", "gpt2", "bart", "qwen2", "sentence")
# The machine's limits, measured at the start of a run: GEMM GFLOP/s by dtype, memory read GB/s.
LIMITS: dict[str, float] = {}


# -- figures and the table -----------------------------------------------------------------------------------
@dataclass
class Target:
    text: str
    met: Callable[[float, float, Optional[float]], bool]  # (ours, theirs, floor) medians -> met?


@dataclass
class Row:
    figure: str
    unit: str                                   # ms | MB | tok/s | GFLOP/s | GB/s
    ours: Optional[list[float]] = None
    theirs: Optional[list[float]] = None
    floor: Optional[list[float]] = None         # the machine's floor or limit for this figure, same unit
    floor_text: str = ""
    target: Optional[Target] = None
    ours_na: str = ""                           # why there is no number
    theirs_na: str = ""
    note: str = ""


def median(values: Optional[list[float]]) -> Optional[float]:
    return statistics.median(values) if values else None


def fmt(values: Optional[list[float]], unit: str, na: str = "") -> str:
    if not values:
        return f"n/a ({na})" if na else ""
    m = statistics.median(values)
    digits = 0 if m >= 100 else (1 if m >= 10 else 2)
    if len(values) == 1:
        return f"{m:.{digits}f} {unit}"
    return f"{m:.{digits}f} {unit} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def table(rows: list[Row]) -> str:
    lines = ["| figure | pretrained | transformers | ratio p/t | floor / limit | target | met? |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ours, theirs, floor = median(r.ours), median(r.theirs), median(r.floor)
        ratio = f"{ours / theirs:.2f}" if ours is not None and theirs else ""
        met = ""
        if r.target is not None and ours is not None:
            try:
                met = "yes" if r.target.met(ours, theirs, floor) else "**no**"
            except TypeError:  # a comparison that needs the missing other side
                met = ""
        floor_text = r.floor_text or fmt(r.floor, r.unit)
        figure = r.figure + (f" ({r.note})" if r.note else "")
        lines.append(f"| {figure} | {fmt(r.ours, r.unit, r.ours_na)} | {fmt(r.theirs, r.unit, r.theirs_na)} | "
                     f"{ratio} | {floor_text} | {r.target.text if r.target else ''} | {met} |")
    return "\n".join(lines)


# -- fresh processes ------------------------------------------------------------------------------------------
class ChildError(RuntimeError):
    pass


def child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, CHILD, *args], capture_output=True, text=True, timeout=900,
                          cwd=HERE)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["exit status %d" % proc.returncode])[-1]
        raise ChildError(last[:160])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def alternate(reps: int, runs: dict[str, Callable[[], dict]]) -> dict[str, list[dict] | str]:
    """Run each measurement `reps` times, ABBA order; a run that fails records its error and is not retried."""
    results: dict[str, list[dict] | str] = {name: [] for name in runs}
    names = list(runs)
    for rep in range(reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            if isinstance(results[name], str):
                continue
            try:
                results[name].append(runs[name]())
            except ChildError as e:
                results[name] = f"error: {e}"
    return results


def values(result, key: str, scale: float = 1.0) -> Optional[list[float]]:
    return [r[key] * scale for r in result] if isinstance(result, list) and result else None


def na(result) -> str:
    return result if isinstance(result, str) else ""


def has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


PRETRAINED_ARCH = {"bert": "pretrained.models.bert", "minilm": "pretrained.models.bert",
                   "gpt2": "pretrained.models.gpt2", "bart": "pretrained.models.bart",
                   "qwen2": "pretrained.models.qwen2"}
NOT_IMPLEMENTED = "not implemented"


def warm_page_cache(ckpt: checkpoints.Checkpoint) -> None:
    for path in ckpt.weight_files():
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def bench_import(reps: int, log) -> list[Row]:
    log("import times (fresh processes) ...")
    res = alternate(reps, {
        "torch": lambda: child("import", "import torch"),
        "p_auto": lambda: child("import", "from pretrained import AutoModel"),
        "t_auto": lambda: child("import", "from transformers import AutoModel"),
        "p_pkg": lambda: child("import", "import pretrained"),
        "t_pkg": lambda: child("import", "import transformers"),
        "torch_rss": lambda: child("torch"),
    })
    torch_imported = any(r.get("torch_imported") for r in res["p_auto"]) if isinstance(res["p_auto"], list) else None
    note = "" if torch_imported is None else \
        ("imports torch" if torch_imported else "pretrained does not import torch here: it is imported at first use")
    return [
        Row("`import torch` (floor of the imports below)", "ms", floor=values(res["torch"], "seconds", 1e3)),
        Row("`from <lib> import AutoModel`", "ms", values(res["p_auto"], "seconds", 1e3),
            values(res["t_auto"], "seconds", 1e3), floor=values(res["torch"], "seconds", 1e3),
            floor_text=f"import torch {fmt(values(res['torch'], 'seconds', 1e3), 'ms')}",
            target=Target("≤ import torch + 10 %", lambda o, t, f: o <= 1.10 * f), note=note,
            ours_na=na(res["p_auto"]), theirs_na=na(res["t_auto"])),
        Row("`import <lib>`", "ms", values(res["p_pkg"], "seconds", 1e3), values(res["t_pkg"], "seconds", 1e3),
            target=Target("≤ 50 ms", lambda o, t, f: o <= 50), ours_na=na(res["p_pkg"]), theirs_na=na(res["t_pkg"])),
        Row("peak RSS of a process that imported torch only", "MB", floor=values(res["torch_rss"], "peak_rss_mb")),
    ]


def bench_load(reps: int, log) -> list[Row]:
    rows = []
    torch_rss = values(alternate(max(2, reps // 2), {"t": lambda: child("torch")})["t"], "peak_rss_mb")
    for ckpt in checkpoints.CHECKPOINTS:
        if ckpt.kind == "qwen2":
            continue  # measured in the qwen2 section
        warm_page_cache(ckpt)
        files = ckpt.weight_files()
        size_mb = sum(os.path.getsize(p) for p in files) / 2**20
        ours_ok = has(PRETRAINED_ARCH[ckpt.kind])
        log(f"from_pretrained {ckpt.name} (fresh processes) ...")
        runs = {"read": lambda: child("read", *files),
                "ours": lambda: child("load", "pretrained", ckpt.folder),
                "theirs": lambda: child("load", "transformers", ckpt.folder)}
        if not ours_ok:
            del runs["ours"]
        bert_base = ckpt.name == "bert-base-cased"
        res = alternate(reps if bert_base else max(2, reps - 2), runs)
        read_ms = values(res["read"], "seconds", 1e3)
        ours_na = NOT_IMPLEMENTED if not ours_ok else na(res["ours"])
        gbps = size_mb / 1024 / (statistics.median(read_ms) / 1e3) if read_ms else 0
        time_target = Target("≤ 0.5× transformers and ≤ 3× read",
                             lambda o, t, f: o <= 0.5 * t and o <= 3 * f) if bert_base else None
        rss_target = Target("≤ transformers", lambda o, t, f: o <= t) if bert_base else None
        rows.append(Row(f"from_pretrained {ckpt.name} [{ckpt.layout}]", "ms",
                        values(res.get("ours"), "seconds", 1e3), values(res["theirs"], "seconds", 1e3),
                        floor=read_ms, floor_text=f"read {size_mb:.0f} MB: {fmt(read_ms, 'ms')}, {gbps:.1f} GB/s",
                        target=time_target, ours_na=ours_na, theirs_na=na(res["theirs"])))
        rows.append(Row(f"peak RSS, from_pretrained {ckpt.name}", "MB",
                        values(res.get("ours"), "peak_rss_mb"), values(res["theirs"], "peak_rss_mb"),
                        floor_text=f"torch alone {fmt(torch_rss, 'MB')} + file {size_mb:.0f} MB",
                        target=rss_target, ours_na=ours_na, theirs_na=na(res["theirs"])))
        if bert_base:
            log("import + from_pretrained + first forward, bert-base-cased (fresh processes) ...")
            res = alternate(reps, {"ours": lambda: child("firstuse", "pretrained", ckpt.folder),
                                   "theirs": lambda: child("firstuse", "transformers", ckpt.folder)})
            rows.append(Row("import + from_pretrained + first 1×8 forward, bert-base-cased", "ms",
                            values(res["ours"], "seconds", 1e3), values(res["theirs"], "seconds", 1e3),
                            ours_na=na(res["ours"]), theirs_na=na(res["theirs"]),
                            note="what a script waits for",
                            target=Target("≤ 0.4× transformers", lambda o, t, f: o <= 0.4 * t)))
            rows.append(Row("peak RSS of the above", "MB", values(res["ours"], "peak_rss_mb"),
                            values(res["theirs"], "peak_rss_mb"), ours_na=na(res["ours"]),
                            theirs_na=na(res["theirs"]), floor_text=f"file {size_mb:.0f} MB",
                            target=Target("≤ 1.0× transformers", lambda o, t, f: o <= t)))
            ratio = lambda r: [x["first_ms"] / x["second_ms"] for x in r] if isinstance(r, list) and r else None  # noqa: E731
            rows.append(Row("first forward after from_pretrained ÷ second (1×8, same process)", "×",
                            ratio(res["ours"]), ratio(res["theirs"]), ours_na=na(res["ours"]),
                            theirs_na=na(res["theirs"]), note="a cold first forward pays for page faults",
                            target=Target("≤ 1.2", lambda o, t, f: o <= 1.2)))
    return rows


# -- in-process figures ------------------------------------------------------------------------------------
def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def alternate_timed(reps: int, warmup: int, ours: Optional[Callable], theirs: Callable):
    """Warm both up, then alternate ABBA; returns (ours seconds, theirs seconds, last outputs)."""
    fns = {"ours": ours, "theirs": theirs} if ours is not None else {"theirs": theirs}
    times: dict[str, list[float]] = {k: [] for k in fns}
    outs: dict[str, object] = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
    names = list(fns)
    for rep in range(reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            seconds, outs[name] = timed(fns[name])
            times[name].append(seconds)
    return times.get("ours"), times["theirs"], outs


def machine_limits(reps: int, log) -> tuple[list[Row], float, float]:
    """fp32 GEMM throughput (torch.mm, i.e. MKL, and oneDNN's linear, the faster of torch's two CPU GEMM
    backends here) and memory read bandwidth, with THREADS threads. Returns (rows, best GEMM median, bandwidth)."""
    import torch
    log("machine limits: fp32 GEMM 2048³, memory read bandwidth ...")
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    gemms = {"torch.mm (MKL)": lambda: torch.mm(a, b)}
    if torch.backends.mkldnn.is_available():
        gemms["oneDNN linear"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    rows, best = [], 0.0
    for name, fn in gemms.items():
        fn()
        gflops = [2 * n**3 / timed(fn)[0] / 1e9 for _ in range(max(5, reps))]
        rows.append(Row(f"fp32 GEMM {n}×{n}×{n}, {name}, {THREADS} threads", "GFLOP/s", floor=gflops))
        best = max(best, statistics.median(gflops))
    LIMITS["float32"] = best
    if torch.backends.mkldnn.is_available():  # bf16 through oneDNN (AVX512-BF16 / AMX where the CPU has them)
        ab, bb = a.bfloat16(), b.bfloat16()
        fn = lambda: torch.ops.mkldnn._linear_pointwise(ab, bb, None, "none", [], "")  # noqa: E731
        fn()
        gflops = [2 * n**3 / timed(fn)[0] / 1e9 for _ in range(max(5, reps))]
        rows.append(Row(f"bf16 GEMM {n}×{n}×{n}, oneDNN linear, {THREADS} threads", "GFLOP/s", floor=gflops))
        LIMITS["bfloat16"] = statistics.median(gflops)
    x = torch.ones(128 * 2**20)  # 512 MB, larger than any cache
    x.sum()
    gbps = [x.numel() * 4 / timed(lambda: x.sum())[0] / 1e9 for _ in range(max(5, reps))]
    del x
    rows.append(Row("memory read bandwidth (sum of a 512 MB tensor)", "GB/s", floor=gbps))
    LIMITS["bandwidth"] = statistics.median(gbps)
    return rows, best, statistics.median(gbps)


def bert_flops(config, B: int, T: int) -> float:
    """Matmul FLOPs of a BertModel forward: 2·(weights of the linears)·tokens + attention 4·B·T²·C per layer,
    plus the pooler on the first token."""
    C, I, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    linear = L * (4 * C * C + 2 * C * I)
    return 2 * linear * B * T + L * 4 * B * T * T * C + 2 * C * C * B


def load_pair(kind: str, folder: str, auto: str):
    """(ours or None, theirs, why ours is missing) for an Auto class name, both in eval mode."""
    import transformers
    theirs = getattr(transformers, auto).from_pretrained(folder, attn_implementation="sdpa").eval()
    if not has(PRETRAINED_ARCH[kind]):
        return None, theirs, NOT_IMPLEMENTED
    import pretrained
    try:
        return getattr(pretrained, auto).from_pretrained(folder).eval(), theirs, ""
    except Exception as e:  # a model being written while the benchmark runs: report it, measure the rest
        return None, theirs, f"error: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"


def max_diff(a, b) -> float:
    return float((a - b).abs().max())


def bench_bert(reps: int, gemm_gflops: float, log) -> list[Row]:
    import torch
    ckpt = checkpoints.BY_NAME["bert-base-cased"]
    ours, theirs, why = load_pair("bert", ckpt.folder, "AutoModel")
    rows = []
    g = torch.Generator().manual_seed(0)
    for B, T, n in ((1, 8, 30), (8, 128, 7), (32, 128, 4)):
        n = max(2, n * reps // 5)
        log(f"BERT-base forward {B}×{T}, {n} repetitions ...")
        ids = torch.randint(1000, ours.config.vocab_size if ours else 28996, (B, T), generator=g)
        mask = torch.ones(B, T, dtype=torch.long)
        with torch.inference_mode():
            run_ours = (lambda: ours(input_ids=ids, attention_mask=mask).last_hidden_state) if ours else None
            run_theirs = lambda: theirs(input_ids=ids, attention_mask=mask).last_hidden_state  # noqa: E731
            t_ours, t_theirs, outs = alternate_timed(n, 2 if B * T < 1000 else 1, run_ours, run_theirs)
        flops = bert_flops(theirs.config, B, T)
        peak = gemm_gflops * 1e9
        frac = lambda ts: f"{flops / statistics.median(ts) / peak:.0%}" if ts else "–"  # noqa: E731
        note = f"max abs diff {max_diff(outs['ours'], outs['theirs']):.1e}" if ours else ""
        speed = {(1, 8): 2.0}.get((B, T), 1.2)
        rows.append(Row(f"BERT-base forward {B}×{T}", "ms", [t * 1e3 for t in t_ours] if t_ours else None,
                        [t * 1e3 for t in t_theirs], ours_na=why, note=note,
                        floor_text=f"{flops / 1e9:.1f} GFLOP; of best GEMM: p {frac(t_ours)}, t {frac(t_theirs)}",
                        target=Target(f"≥ {speed}× faster", lambda o, t, f, s=speed: o * s <= t)))
    return rows


def bench_bert_bf16(reps: int, log) -> list[Row]:
    """BERT-base in bfloat16 (an fp32 checkpoint loaded with dtype=torch.bfloat16), both libraries."""
    import torch
    import transformers
    import pretrained
    ckpt = checkpoints.BY_NAME["bert-base-cased"]
    theirs = transformers.AutoModel.from_pretrained(ckpt.folder, attn_implementation="sdpa",
                                                    dtype=torch.bfloat16).eval()
    ours = pretrained.AutoModel.from_pretrained(ckpt.folder, dtype=torch.bfloat16)
    rows = []
    g = torch.Generator().manual_seed(0)
    for B, T, n in ((1, 8, 20), (8, 128, 5)):
        n = max(2, n * reps // 5)
        log(f"BERT-base bf16 forward {B}×{T}, {n} repetitions ...")
        ids = torch.randint(1000, 28996, (B, T), generator=g)
        mask = torch.ones(B, T, dtype=torch.long)
        with torch.inference_mode():
            t_ours, t_theirs, outs = alternate_timed(
                n, 2, lambda: ours(input_ids=ids, attention_mask=mask).last_hidden_state,
                lambda: theirs(input_ids=ids, attention_mask=mask).last_hidden_state)
        flops = bert_flops(theirs.config, B, T)
        peak = LIMITS.get("bfloat16", 0) * 1e9
        frac = lambda ts: f"{flops / statistics.median(ts) / peak:.0%}" if peak else "–"  # noqa: E731
        rows.append(Row(f"BERT-base forward {B}×{T}, bf16", "ms", [t * 1e3 for t in t_ours],
                        [t * 1e3 for t in t_theirs],
                        note=f"max abs diff {max_diff(outs['ours'].float(), outs['theirs'].float()):.1e}",
                        floor_text=f"{flops / 1e9:.1f} GFLOP; of bf16 GEMM: p {frac(t_ours)}, t {frac(t_theirs)}",
                        target=Target("faster than transformers", lambda o, t, f: o < t)))
    return rows


def generation_rows(name: str, ours, theirs, why: str, prompts: list[tuple[int, int]], new: int,
                    reps: int, target: dict, log, seq2seq: bool, weights_gb: float, bandwidth: float) -> list[Row]:
    import torch
    rows = []
    g = torch.Generator().manual_seed(0)
    vocab = theirs.config.vocab_size
    ours_gen = ours if ours is not None and hasattr(ours, "generate") else None
    why = why or ("" if ours_gen is not None else "generate() not implemented")
    for B, T in prompts:
        log(f"{name} greedy generation, batch {B}, prompt {T}, {new} new tokens, {reps} repetitions ...")
        ids = torch.randint(3, vocab, (B, T), generator=g)
        mask = torch.ones(B, T, dtype=torch.long)
        # min_new_tokens: random weights may favour eos; every row must generate exactly `new` tokens.
        kw = dict(attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        with torch.inference_mode():
            run_ours = (lambda: ours_gen.generate(ids, **kw)) if ours_gen is not None else None
            t_ours, t_theirs, outs = alternate_timed(reps, 1, run_ours, lambda: theirs.generate(ids, **kw))
        start = 1 if seq2seq else T  # a seq2seq output starts with decoder_start_token_id
        n_theirs = B * (outs["theirs"].shape[1] - start)
        note = f"{n_theirs // B} tokens/row"
        if "ours" in outs:
            same = outs["ours"].shape == outs["theirs"].shape and bool((outs["ours"] == outs["theirs"]).all())
            note += ", same tokens" if same else ", **tokens differ**"
            n_ours = B * (outs["ours"].shape[1] - start)
        limit = f"weights read once per step: {bandwidth / weights_gb * B:.0f} tok/s" if weights_gb else ""
        s = target.get(B)
        rows.append(Row(f"{name} greedy, batch {B}, prompt {T}, {new} new", "tok/s",
                        [n_ours / t for t in t_ours] if t_ours else None, [n_theirs / t for t in t_theirs],
                        ours_na=why, note=note, floor_text=limit,
                        target=Target(f"≥ {s}× tokens/s", lambda o, t, f, s=s: o >= s * t) if s else None))
    return rows


def bench_gpt2(reps: int, bandwidth: float, log) -> list[Row]:
    ckpt = checkpoints.BY_NAME["gpt2"]
    ours, theirs, why = load_pair("gpt2", ckpt.folder, "AutoModelForCausalLM")
    weights_gb = sum(p.numel() * 4 for p in {id(p): p for p in theirs.parameters()}.values()) / 1e9
    return generation_rows("GPT-2", ours, theirs, why, [(1, 16), (8, 16)], 64, max(2, reps), {1: 2.0, 8: 1.5}, log,
                           seq2seq=False, weights_gb=weights_gb, bandwidth=bandwidth)


def bench_bart(reps: int, bandwidth: float, log) -> list[Row]:
    import torch
    ckpt = checkpoints.BY_NAME["bart-base"]
    ours, theirs, why = load_pair("bart", ckpt.folder, "AutoModelForSeq2SeqLM")
    B, T = 8, 128
    n = max(2, reps + 2)
    log(f"BART-base forward {B}×{T}, {n} repetitions ...")
    ids = torch.randint(3, theirs.config.vocab_size, (B, T), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(B, T, dtype=torch.long)
    with torch.inference_mode():
        run_ours = (lambda: ours.model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids)
                    .last_hidden_state) if ours is not None else None
        run_theirs = lambda: theirs.model(input_ids=ids, attention_mask=mask,  # noqa: E731
                                          decoder_input_ids=ids).last_hidden_state
        t_ours, t_theirs, outs = alternate_timed(n, 1, run_ours, run_theirs)
    note = "encoder + decoder, no LM head"
    if "ours" in outs:
        note += f", max abs diff {max_diff(outs['ours'], outs['theirs']):.1e}"
    rows = [Row(f"BART-base forward {B}×{T}", "ms", [t * 1e3 for t in t_ours] if t_ours else None,
                [t * 1e3 for t in t_theirs], ours_na=why, note=note,
                target=Target("≥ 1.15× faster", lambda o, t, f: o * 1.15 <= t))]
    # a decoding step reads the decoder's weights and the (shared) LM head, not the encoder's
    decoder = {id(p): p for p in list(theirs.model.decoder.parameters()) + list(theirs.lm_head.parameters())}
    weights_gb = sum(p.numel() * p.element_size() for p in decoder.values()) / 1e9
    rows += generation_rows("BART-base", ours, theirs, why, [(1, 128)], 32, max(2, reps), {1: 1.5}, log,
                            seq2seq=True, weights_gb=weights_gb, bandwidth=bandwidth)
    return rows


QWEN2 = ("qwen2.5-0.5b", "qwen2.5-0.5b-bf16")


def bench_qwen2_load(reps: int, log) -> list[Row]:
    """from_pretrained time and peak RSS of the Qwen2.5-0.5B-shaped checkpoints, fresh processes alternating."""
    rows = []
    for ckpt in (checkpoints.BY_NAME[name] for name in QWEN2):
        warm_page_cache(ckpt)
        size_mb = sum(os.path.getsize(p) for p in ckpt.weight_files()) / 2**20
        log(f"from_pretrained {ckpt.name} (fresh processes) ...")
        res = alternate(max(2, reps - 2), {"ours": lambda: child("load", "pretrained", ckpt.folder),
                                           "theirs": lambda: child("load", "transformers", ckpt.folder)})
        rows.append(Row(f"from_pretrained {ckpt.name} [{ckpt.layout}]", "ms", values(res["ours"], "seconds", 1e3),
                        values(res["theirs"], "seconds", 1e3), floor_text=f"file {size_mb:.0f} MB",
                        target=Target("≤ 0.5× transformers", lambda o, t, f: o <= 0.5 * t),
                        ours_na=na(res["ours"]), theirs_na=na(res["theirs"])))
        rows.append(Row(f"peak RSS, from_pretrained {ckpt.name}", "MB", values(res["ours"], "peak_rss_mb"),
                        values(res["theirs"], "peak_rss_mb"), target=Target("≤ transformers", lambda o, t, f: o <= t),
                        ours_na=na(res["ours"]), theirs_na=na(res["theirs"])))
    return rows


def bench_qwen2(reps: int, bandwidth: float, log) -> list[Row]:
    """Qwen2.5-0.5B shape, float32 and bfloat16: prefill of a 512-token prompt (the last position's logits, as
    generation computes them) and greedy decoding at batch 1."""
    import torch
    rows = []
    for ckpt in (checkpoints.BY_NAME[name] for name in QWEN2):
        ours, theirs, why = load_pair("qwen2", ckpt.folder, "AutoModelForCausalLM")
        dtype = str(theirs.dtype).removeprefix("torch.")
        ids = torch.randint(3, theirs.config.vocab_size, (1, 512), generator=torch.Generator().manual_seed(0))
        n = max(2, reps - 2)
        log(f"Qwen2.5-0.5B {dtype} prefill 1×512, {n} repetitions ...")
        with torch.inference_mode():
            run_ours = (lambda: ours(ids, use_cache=True, logits_to_keep=1).logits) if ours is not None else None
            t_ours, t_theirs, outs = alternate_timed(
                n, 1, run_ours, lambda: theirs(ids, use_cache=True, logits_to_keep=1).logits)
        note = f"{dtype}, last-position logits"
        if "ours" in outs:
            note += f", max abs diff {max_diff(outs['ours'].float(), outs['theirs'].float()):.1e}"
        cfg = theirs.config
        params = sum(p.numel() for n_, p in theirs.named_parameters() if "layers." in n_ and p.dim() == 2)
        flops = 2 * params * 512 + cfg.num_hidden_layers * 2 * 512 * 512 * cfg.hidden_size  # linears + causal attn
        peak = LIMITS.get(dtype, 0) * 1e9
        frac = lambda ts: f"{flops / statistics.median(ts) / peak:.0%}" if ts and peak else "–"  # noqa: E731
        rows.append(Row(f"Qwen2.5-0.5B prefill 1×512 ({dtype})", "ms", [t * 1e3 for t in t_ours] if t_ours else None,
                        [t * 1e3 for t in t_theirs], ours_na=why, note=note,
                        floor_text=f"{flops / 1e9:.0f} GFLOP; of {dtype} GEMM: p {frac(t_ours)}, t {frac(t_theirs)}",
                        target=Target("≥ 1.2× faster", lambda o, t, f: o * 1.2 <= t)))
        weights_gb = sum(p.numel() * p.element_size() for p in {id(p): p for p in theirs.parameters()}.values()) / 1e9
        rows += generation_rows(f"Qwen2.5-0.5B {dtype}", ours, theirs, why, [(1, 32)], 32, max(2, reps - 2),
                                {1: 1.5}, log, seq2seq=False, weights_gb=weights_gb, bandwidth=bandwidth)
        ours = theirs = outs = run_ours = None  # free both models before the next dtype
    return rows


def bench_sentence(quick: bool, log) -> list[Row]:
    """SentenceTransformer.encode of the seeded sentence set (bench/sentence.py's), the real all-MiniLM-L6-v2,
    against sentence-transformers, alternating in this process."""
    import torch
    import sentence as sentence_bench
    import pretrained
    try:
        import sentence_transformers
    except ImportError:
        return [Row("SentenceTransformer.encode, all-MiniLM-L6-v2", "sentences/s",
                    theirs_na="sentence-transformers is not installed")]
    n = 1000 if quick else 10_000
    sentences = sentence_bench.make_sentences(n)
    folder = results.minilm_folder()
    ours = pretrained.SentenceTransformer(folder, device="cpu")
    theirs = sentence_transformers.SentenceTransformer(folder, device="cpu")
    log(f"SentenceTransformer.encode, {n} sentences, both libraries ...")
    with torch.inference_mode():
        t_ours, t_theirs, outs = alternate_timed(2 if quick else 3, 0, lambda: ours.encode(sentences, batch_size=32),
                                                 lambda: theirs.encode(sentences, batch_size=32))
    diff = float(abs(outs["ours"] - outs["theirs"]).max())
    return [Row(f"SentenceTransformer.encode {n:,} sentences, all-MiniLM-L6-v2, batch 32", "sentences/s",
                [n / t for t in t_ours], [n / t for t in t_theirs], note=f"max abs diff {diff:.1e}",
                target=Target("≥ 1.5× sentences/s", lambda o, t, f: o >= 1.5 * t))]


# -- the report ---------------------------------------------------------------------------------------------
def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    ram = "unknown"
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
        ram = f"{kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    import torch
    import transformers
    import pretrained
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "ram": ram, "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "pretrained": pretrained.__version__, "blas": "MKL" if torch.backends.mkl.is_available() else "?",
            "capability": torch.backends.cpu.get_cpu_capability()}


METHOD = """\
How it is measured:
- Checkpoints: built by transformers with seeded random weights in `bench/.work/` (bert-base-cased shape:
  BertConfig() with vocab 28996, as safetensors, as a `.bin` state dict and sharded at 200MB; gpt2: GPT2Config();
  bart-base: 6+6 layers, d_model 768, vocab 50265; qwen2.5-0.5b: Qwen2ForCausalLM with Qwen/Qwen2.5-0.5B's
  config, in float32 and in bfloat16), plus the real all-MiniLM-L6-v2. Qwen2 prefill is one forward over a
  512-token prompt computing the last position's logits (`logits_to_keep=1`, as generation does); its decoding
  figure is greedy at batch 1 from a 32-token prompt.
- Fresh-process figures (imports, from_pretrained, first use) run `bench/child.py` once per repetition, the two
  libraries alternating ABBA; OMP/MKL threads = 2. Import times exclude interpreter start-up. from_pretrained is
  timed after torch and the library are imported; peak RSS is the child's VmHWM (interpreter, torch and
  library included; not ru_maxrss, which Linux carries over from the parent across fork and exec). The weight
  files are read once beforehand, so every load reads from the page cache; the read floor is a child that
  `readinto`s the files' bytes into one preallocated buffer.
- In-process figures: both models loaded once in one process (transformers with `attn_implementation="sdpa"`,
  its default), `eval()`, `torch.inference_mode()`, `torch.set_num_threads(2)`, warmed up, then alternated
  per repetition. Inputs are random token ids with an all-ones attention mask (no padding).
  "of best GEMM" is the forward's matmul FLOPs (2·linear weights·tokens + 4·B·T²·C per layer) / its median
  time / the higher of the two fp32 GEMM medians of the same run (MKL through torch.mm; oneDNN's linear).
- Generation is greedy (`do_sample=False`) with `min_new_tokens = max_new_tokens`, since random weights may
  favour eos; tokens/s counts the new tokens of every row; "same tokens" means both libraries generated
  identical ids. The GPT-2 limit assumes every weight is read from memory once per decoding step.
- Numeric mode: every compute figure is pretrained's default mode (oneDNN on weights packed once at load,
  outputs within 1e-4 of transformers; `--mode exact` measures exact mode instead). The "max abs diff" and
  "same tokens" notes check the contract in the same run.
- Limits beside the figures: "of GEMM" is the figure's matmul FLOPs / its median time / the machine's GEMM
  peak in that dtype measured at the start of the run (2048³, 2 threads; bf16 through oneDNN); "weights read
  once per step" is memory read bandwidth ÷ the bytes of the weights a decoding step reads (BART: decoder and
  LM head) × batch, the memory-bound ceiling of greedy decoding.
- First forward ÷ second: the child above times its first 1×8 forward right after from_pretrained and then a
  second one; above 1 means the first call paid for something (page faults on memory-mapped weights, packing).
- SentenceTransformer.encode: bench/sentence.py's seeded sentences (10,000; 1,000 with --quick), the real
  all-MiniLM-L6-v2, batch 32, against sentence-transformers in this process.
- Ratio = pretrained median / transformers median: below 1 is better for times and memory, above 1 for tokens/s.
- `from pretrained import AutoModel` does not import torch (the import is deferred to the first model), so the
  honest end-to-end figure is "import + from_pretrained + first forward". In default mode pretrained's
  from_pretrained packs every linear weight (reading the file) and runs a 4-token warm-up forward, so its
  from_pretrained time and RSS include what transformers pays in its first forward; the first-forward figures
  compare like with like.
"""


def write_results(path: str, rows: list[Row], info: dict, command: str, seconds: float,
                  loads: tuple[tuple, tuple]) -> None:
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = (f"# Benchmark results\n\nGenerated by `{command}` on {date}, in {seconds / 60:.1f} minutes "
            f"(`bench/run.py` writes this file; do not edit by hand).\n\n"
            f"- Machine: {info['cpu']}, {info['cores']} cores, {info['ram']} RAM; torch CPU capability "
            f"{info['capability']}, BLAS {info['blas']}\n"
            f"- Python {info['python']}, torch {info['torch']}, transformers {info['transformers']}, "
            f"pretrained {info['pretrained']}\n"
            f"- Load average (1/5/15 min) at start {'/'.join(f'{x:.2f}' for x in loads[0])}, at end "
            f"{'/'.join(f'{x:.2f}' for x in loads[1])}\n\n"
            f"{table(rows)}\n\n{METHOD}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text += results.kept_sections(path)
    with open(path, "w") as f:
        f.write(text)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 repetitions instead of 5 (a smoke test, not for quoting)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections among {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--out", help="where to write the table (default: bench/RESULTS.md for a full run of "
                                      "every section, bench/.work/RESULTS-partial.md otherwise)")
    parser.add_argument("--mode", choices=("default", "exact"), default="default",
                        help="pretrained's numeric mode for every figure (exact: PRETRAINED_EXACT=1)")
    args = parser.parse_args(argv)
    if args.mode == "exact":
        os.environ["PRETRAINED_EXACT"] = "1"  # the fresh processes too
    else:
        os.environ.pop("PRETRAINED_EXACT", None)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose among {', '.join(SECTIONS)}")
    full = not args.quick and set(only) == set(SECTIONS) and args.mode == "default"
    out = args.out or (os.path.join(HERE, "RESULTS.md") if full else os.path.join(HERE, ".work", "RESULTS-partial.md"))
    reps = 2 if args.quick else 5

    start = time.perf_counter()
    load_start = os.getloadavg()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    checkpoints.build(log)
    import torch
    import transformers
    torch.set_num_threads(THREADS)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    rows: list[Row] = []
    limits, gemm, bandwidth = machine_limits(reps, log)
    rows += limits
    if "import" in only:
        rows += bench_import(reps, log)
    if "load" in only:
        rows += bench_load(reps, log)
    if "qwen2" in only:
        rows += bench_qwen2_load(reps, log)
    # Compute figures in one numeric mode: the default (fast) mode unless --mode exact.
    from pretrained import fastpath
    fastpath.EXACT = args.mode == "exact"
    compute: list[Row] = []
    if "bert" in only:
        compute += bench_bert(reps, gemm, log)
        compute += bench_bert_bf16(reps, log)
    if "gpt2" in only:
        compute += bench_gpt2(reps, bandwidth, log)
    if "bart" in only:
        compute += bench_bart(reps, bandwidth, log)
    if "qwen2" in only:
        compute += bench_qwen2(reps, bandwidth, log)
    if "sentence" in only:
        compute += bench_sentence(args.quick, log)
    for row in compute:
        row.figure += f" — {args.mode}"
    rows += compute

    seconds = time.perf_counter() - start
    command = "python bench/run.py" + (" --quick" if args.quick else "") + \
        (" --mode exact" if args.mode == "exact" else "") + \
        (f" --only {args.only}" if set(only) != set(SECTIONS) else "")
    write_results(out, rows, machine(), command, seconds, (load_start, os.getloadavg()))
    print(table(rows))
    print(f"\n{seconds / 60:.1f} minutes; written to {os.path.relpath(out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
