"""One table of bad inputs (folders, files, ids, options), one harness (issue 9, items 3-5).

Each case starts from a small good checkpoint folder (BERT with a WordPiece vocab.txt, or GPT-2 with a
byte-level tokenizer.json), breaks one thing, and makes one call. The harness asserts the exception's type and
that its message names the culprit (the key, file or value at fault). The same table then goes through the
command line (`pretrained run FOLDER hello`): one `error: ...` line, a non-zero exit, no traceback.

Cases run in subprocesses: those where memory is not the point in one (the suite stays fast), those where it is
in another whose address space is limited (RLIMIT_AS), so that asking for terabytes fails instead of
overcommitting.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import random
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

HERE = Path(__file__).resolve().parent
MEMORY_LIMIT = 2 * 2**30  # bytes of address space for the memory cases (importing torch needs ~0.7 GB)
TINY_BERT = dict(vocab_size=12, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
                 max_position_embeddings=16)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "a", "b", "##s", "the", "!"]


@dataclass
class Case:
    name: str
    mutate: Callable[[Path], None]          # breaks one thing in a copy of the good folder
    error: str                              # the exception class name expected (or one of its bases)
    culprit: str | list[str]                # text(s) the message must contain
    call: str = "auto"                      # what is called: see CALLS
    kwargs: dict = field(default_factory=dict)
    base: str = "bert"                      # which good folder: "bert" or "gpt2"
    memory: bool = False                    # run alone, under MEMORY_LIMIT
    cli: bool = True                        # also through `pretrained run FOLDER hello`


# -- ways of breaking a folder -------------------------------------------------------------------------------
def edit_config(**changes):
    def mutate(folder: Path) -> None:
        data = json.loads((folder / "config.json").read_text())
        data.update(changes)
        (folder / "config.json").write_text(json.dumps(data))  # NaN and Infinity are written as such
    return mutate


def write(name: str, data: bytes | str):
    def mutate(folder: Path) -> None:
        for weights in ("model.safetensors", "pytorch_model.bin"):
            if name.endswith((".safetensors", ".bin")) and (folder / weights).exists():
                (folder / weights).unlink()
        (folder / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return mutate


def torch_save(name: str, make):
    def mutate(folder: Path) -> None:
        import torch

        buffer = io.BytesIO()
        torch.save(make(torch), buffer)
        write(name, buffer.getvalue())(folder)
    return mutate


def edit_json(name: str, **changes):
    def mutate(folder: Path) -> None:
        path = folder / name
        data = json.loads(path.read_text()) if path.exists() else {}
        data.update(changes)
        path.write_text(json.dumps(data))
    return mutate


def nested_json(name: str, depth: int = 100_000):
    return write(name, "[" * depth + "]" * depth)


def malicious_pickle() -> bytes:
    class RunsCode:
        def __reduce__(self):
            return os.system, ("echo owned > /dev/null",)
    return pickle.dumps({"w": RunsCode()}, protocol=2)


def remove(name: str):
    return lambda folder: (folder / name).unlink()


def vocab_without_unk(folder: Path) -> None:
    (folder / "vocab.txt").write_text("\n".join(v for v in VOCAB if v != "[UNK]") + "\n")


def only_embeddings(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in state.items() if "word_embeddings" in k}, folder / "model.safetensors")


def gpt2_weights_in_bert_folder(folder: Path) -> None:
    pass  # the case loads BertModel from the GPT-2 folder


def index_with_missing_shard(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    from safetensors import safe_open

    with safe_open(str(folder / "model-00001-of-00002.safetensors"), "pt") as f:
        keys = list(f.keys())
    weight_map = {k: "model-00001-of-00002.safetensors" for k in keys}
    weight_map[keys[0]] = "model-00002-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def index_escaping_the_folder(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {"embeddings.word_embeddings.weight": "../../etc/passwd"}}))


def stride0_unused(torch):
    return {"unused": torch.zeros(1, dtype=torch.float16).expand(2**20, 2**20)}  # 2 TB once cast


def stride0_used(torch):
    return {"embeddings.word_embeddings.weight": torch.zeros(1, dtype=torch.float16).expand(2**20, 2**20)}


CASES = [
    # config.json
    Case("config not JSON", write("config.json", "{not json"), "ConfigError", "config.json"),
    Case("config a list", write("config.json", "[1, 2]"), "ConfigError", ["config.json", "list"]),
    Case("config deeply nested", nested_json("config.json"), "ConfigError", ["config.json", "nested"]),
    Case("config no model_type", edit_config(model_type=None), "ValueError", ["config.json", "model_type"]),
    Case("config unknown model_type", edit_config(model_type="llama9"), "ValueError", "llama9"),
    Case("hidden_size a string", edit_config(hidden_size="16"), "ConfigError", ["config.json", "hidden_size", "'16'"]),
    Case("dropout 2.0", edit_config(hidden_dropout_prob=2.0), "ConfigError", ["config.json", "hidden_dropout_prob"]),
    Case("layer_norm_eps NaN", edit_config(layer_norm_eps=float("nan")), "ConfigError", ["config.json", "layer_norm_eps"]),
    Case("layer_norm_eps inf", edit_config(layer_norm_eps=float("inf")), "ConfigError", "layer_norm_eps"),
    Case("dropout NaN", edit_config(attention_probs_dropout_prob=float("nan")), "ConfigError",
         "attention_probs_dropout_prob"),
    Case("num_hidden_layers 0", edit_config(num_hidden_layers=0), "ConfigError", ["config.json", "num_hidden_layers"]),
    Case("num_hidden_layers -1", edit_config(num_hidden_layers=-1), "ConfigError", "num_hidden_layers"),
    Case("num_hidden_layers true", edit_config(num_hidden_layers=True), "ConfigError", "num_hidden_layers"),
    Case("num_hidden_layers 1e6", edit_config(num_hidden_layers=10**6), "ConfigError", "num_hidden_layers"),
    Case("n_layer 0 (GPT-2)", edit_config(n_layer=0), "ConfigError", ["config.json", "n_layer"], base="gpt2"),
    # other families' configs get the same checks from their declared fields
    Case("DistilBERT n_layers 0", edit_config(model_type="distilbert", n_layers=0), "ConfigError",
         ["config.json", "n_layers"]),
    Case("Llama rms_norm_eps NaN", edit_config(model_type="llama", rms_norm_eps=float("nan")), "ConfigError",
         ["config.json", "rms_norm_eps"]),
    Case("Qwen2 num_hidden_layers 1e6", edit_config(model_type="qwen2", num_hidden_layers=10**6), "ConfigError",
         "num_hidden_layers"),
    Case("id2label bad key", edit_config(id2label={"x": "A"}), "ConfigError", ["id2label", "'x'"]),
    Case("num_labels 1e8 in AutoConfig", edit_config(num_labels=10**8), "ConfigError", "num_labels",
         call="autoconfig", memory=True),
    # weights
    Case("no weights", remove("model.safetensors"), "CheckpointError", "model.safetensors"),
    Case("empty safetensors", write("model.safetensors", b"\x02\x00\x00\x00\x00\x00\x00\x00{}"), "CheckpointError",
         ["no weight", "AutoModel"]),
    Case("empty .bin", torch_save("pytorch_model.bin", lambda torch: {}), "CheckpointError", ["no weight"]),
    Case("BertModel on a GPT-2 folder", gpt2_weights_in_bert_folder, "CheckpointError",
         ["no weight", "GPT2LMHeadModel", "AutoModel"], call="bert", base="gpt2", cli=False),
    Case("most weights missing", only_embeddings, "CheckpointError", ["allow_missing_weights", "lacks"]),
    Case("truncated safetensors", write("model.safetensors", b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":"),
         "CheckpointError", "model.safetensors"),
    Case("corrupt .bin", write("pytorch_model.bin", random.Random(64).randbytes(64)), "CheckpointError",
         "pytorch_model.bin"),
    # a pickle header with an unknown protocol: torch warns before it fails, and the warning must not leak out
    Case("corrupt .bin, odd protocol", write("pytorch_model.bin", b"\x80\xba3" + bytes(61)), "CheckpointError",
         "pytorch_model.bin"),
    Case("malicious .bin", write("pytorch_model.bin", malicious_pickle()), "CheckpointError",
         ["pytorch_model.bin", "GLOBAL", "system"]),
    Case("integer keys in .bin", torch_save("pytorch_model.bin", lambda torch: {0: torch.zeros(2)}),
         "CheckpointError", ["pytorch_model.bin", "0"]),
    Case("non-tensor values in .bin", torch_save("pytorch_model.bin", lambda torch: {"a": [1, 2]}),
         "CheckpointError", ["pytorch_model.bin", "'a'"]),
    Case("wrong shape", torch_save("pytorch_model.bin", lambda torch: {"embeddings.word_embeddings.weight":
                                                                      torch.zeros(3, 3)}),
         "ShapeMismatchError", "embeddings.word_embeddings.weight"),
    Case("stride-0 unused tensor", torch_save("pytorch_model.bin", stride0_unused), "CheckpointError", "no weight",
         memory=True),
    Case("stride-0 wrong shape", torch_save("pytorch_model.bin", stride0_used), "ShapeMismatchError",
         "word_embeddings", memory=True),
    Case("index lists a missing shard", index_with_missing_shard, "CheckpointError", "model-00002-of-00002"),
    Case("index escapes the folder", index_escaping_the_folder, "CheckpointError", "../../etc/passwd"),
    # tokenizer files
    Case("vocab.txt without [UNK]", vocab_without_unk, "ValueError", ["vocab.txt", "[UNK]"], call="tokenizer"),
    Case("tokenizer.json corrupt", write("tokenizer.json", "{}"), "ValueError", "tokenizer.json", call="tokenizer"),
    Case("tokenizer config deeply nested", nested_json("tokenizer_config.json"), "ValueError",
         "tokenizer_config.json", call="tokenizer"),
    Case("model_max_length 'abc'", edit_json("tokenizer_config.json", model_max_length="abc"), "ValueError",
         ["model_max_length", "'abc'"], call="tokenizer"),
    Case("model_max_length NaN", edit_json("tokenizer_config.json", model_max_length=float("nan")), "ValueError",
         "model_max_length", call="tokenizer"),
    Case("model_max_length -5", edit_json("tokenizer_config.json", model_max_length=-5), "ValueError",
         ["model_max_length", "-5"], call="tokenizer"),
    # generation_config.json
    Case("num_return_sequences 1e9", edit_json("generation_config.json", num_return_sequences=10**9, do_sample=True),
         "ConfigError", ["generation_config.json", "num_return_sequences"], base="gpt2", call="causal"),
    Case("num_beams a string", edit_json("generation_config.json", num_beams="4"), "ConfigError",
         ["generation_config.json", "num_beams"], base="gpt2", call="causal"),
    Case("generation config not JSON", write("generation_config.json", "nope"), "ConfigError",
         "generation_config.json", base="gpt2", call="causal"),
    # ids and options
    Case("subfolder ../x", lambda f: None, "ValueError", "'../x'", kwargs={"subfolder": "../x"}, cli=False),
    Case("revision ..", lambda f: None, "ValueError", "'../../refs'", call="hub",
         kwargs={"revision": "../../refs"}, cli=False),
    Case("misspelt option to AutoModel", lambda f: None, "TypeError", "revison", kwargs={"revison": "x"}, cli=False),
    Case("not a folder, not a Hub id", lambda f: None, "RepoNotFoundError", "a/b/c", call="id", cli=False),
]
# Bad command-line flags, run as `pretrained run GOOD-FOLDER hello FLAGS...`: (base, flags, text the error names)
FLAG_CASES = [
    ("gpt2", ["--num-beams", "0"], "num_beams"),
    ("gpt2", ["--num-beams", "100000"], "num_beams"),
    ("gpt2", ["--max-new-tokens", "0"], "max_new_tokens"),
    ("gpt2", ["--max-new-tokens", "1000000000"], "max_new_tokens"),
    ("gpt2", ["--do-sample", "--temperature", "nan"], "temperature"),
    ("gpt2", ["--do-sample", "--top-p", "2"], "top_p"),
    ("gpt2", ["--do-sample", "--top-k", "-3"], "top_k"),
    ("gpt2", ["--repetition-penalty", "0"], "repetition_penalty"),
    ("gpt2", ["--no-repeat-ngram-size", "-1"], "no_repeat_ngram_size"),
    ("bert", ["--top-k", "-1"], "--top-k"),
    ("bert", ["--file", "/no/such/texts.txt"], "/no/such/texts.txt"),
]
CASES_BY_NAME = {case.name: case for case in CASES}
assert len(CASES_BY_NAME) == len(CASES)


# -- building the good folders and running one case (inside the subprocess) ---------------------------------
def build_good(base: str, folder: Path) -> None:
    import torch

    torch.manual_seed(0)
    folder.mkdir(parents=True)
    if base == "bert":
        from pretrained import BertConfig, BertModel

        BertModel(BertConfig(**TINY_BERT)).save_pretrained(folder)
        (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
        (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    else:
        import tokenizers
        from tokenizers import decoders, models, pre_tokenizers

        from pretrained import GPT2Config, GPT2LMHeadModel

        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        tok = tokenizers.Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens(["<|endoftext|>"])
        tok.save(str(folder / "tokenizer.json"))
        (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
        config = GPT2Config(vocab_size=257, n_positions=32, n_embd=16, n_layer=2, n_head=2, bos_token_id=256,
                            eos_token_id=256)
        GPT2LMHeadModel(config).save_pretrained(folder)


def call(case: Case, folder: Path):
    import pretrained

    if case.call == "auto":
        return pretrained.AutoModel.from_pretrained(folder, **case.kwargs)
    if case.call == "bert":
        return pretrained.BertModel.from_pretrained(folder, **case.kwargs)
    if case.call == "autoconfig":
        return pretrained.AutoConfig.from_pretrained(folder, **case.kwargs)
    if case.call == "tokenizer":
        return pretrained.AutoTokenizer.from_pretrained(folder, **case.kwargs)
    if case.call == "causal":
        return pretrained.AutoModelForCausalLM.from_pretrained(folder, **case.kwargs)
    if case.call == "hub":
        return pretrained.AutoModel.from_pretrained("org/name", cache_dir=str(folder / "cache"), **case.kwargs)
    if case.call == "id":
        return pretrained.AutoModel.from_pretrained("a/b/c", **case.kwargs)
    raise AssertionError(case.call)


def run_cli(argv: list[str]) -> dict:
    from pretrained import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (print(e.code, file=sys.stderr) or 1)
        except BaseException:  # what a user would see as a traceback
            rc, tb = "traceback", traceback.format_exc()
            return {"rc": rc, "stderr": tb, "stdout": out.getvalue()}
    return {"rc": rc, "stderr": err.getvalue(), "stdout": out.getvalue()}


def run_cases(names: list[str], workdir: str) -> dict:
    """Run the named cases (and their CLI runs) in this process; returns name -> outcome."""
    import shutil

    os.environ["HF_HUB_OFFLINE"] = "1"
    good = {}
    results = {}
    for i, (base, flags, _) in enumerate(FLAG_CASES if "flags" in names else []):
        if base not in good:
            good[base] = Path(workdir) / f"good-{base}"
            build_good(base, good[base])
        results[f"flags {i}"] = {"cli": run_cli(["run", str(good[base]), "hello [MASK]", *flags])}
    for name in [n for n in names if n != "flags"]:
        case = CASES_BY_NAME[name]
        if case.base not in good:
            good[case.base] = Path(workdir) / f"good-{case.base}"
            build_good(case.base, good[case.base])
        folder = Path(workdir) / f"case-{len(results)}"
        shutil.copytree(good[case.base], folder)
        case.mutate(folder)
        outcome: dict = {}
        try:
            call(case, folder)
            outcome["error"] = None
        except BaseException as e:  # noqa: BLE001 - the harness records whatever comes out
            outcome["error"] = [k.__name__ for k in type(e).__mro__]
            outcome["message"] = str(e)
        if case.cli:
            outcome["cli"] = run_cli(["run", str(folder), "hello"])
        results[name] = outcome
    return results


def run_in_subprocess(names: list[str], workdir: Path, memory_limit: int | None = None) -> dict:
    code = (f"import sys, json, resource\n"
            + (f"resource.setrlimit(resource.RLIMIT_AS, ({memory_limit}, {memory_limit}))\n" if memory_limit else "")
            + f"sys.path.insert(0, {str(HERE)!r})\n"
            f"import test_bad_inputs as t\n"
            f"print('RESULT' + json.dumps(t.run_cases({names!r}, {str(workdir)!r})))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT")), None)
    assert line is not None, f"the subprocess died (rc {out.returncode}): {out.stderr[-3000:]}"
    return json.loads(line[len("RESULT"):])


# -- the tests ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grouped(tmp_path_factory) -> dict:
    """Every case where memory is not the point, run in one subprocess."""
    names = [case.name for case in CASES if not case.memory] + ["flags"]
    return run_in_subprocess(names, tmp_path_factory.mktemp("bad-inputs"))


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> dict:
    """The cases where memory is the point, in one subprocess whose address space is limited to MEMORY_LIMIT:
    any of them asking for more fails there instead of succeeding on an overcommitting machine."""
    names = [case.name for case in CASES if case.memory]
    return run_in_subprocess(names, tmp_path_factory.mktemp("bad-inputs-limited"), MEMORY_LIMIT)


def outcome_of(case: Case, request) -> dict:
    return request.getfixturevalue("limited" if case.memory else "grouped")[case.name]


def check_error(case: Case, outcome: dict) -> None:
    assert outcome["error"] is not None, f"{case.name}: no error was raised"
    assert case.error in outcome["error"], f"{case.name}: {outcome['error'][0]}: {outcome['message']}"
    for text in [case.culprit] if isinstance(case.culprit, str) else case.culprit:
        assert text in outcome["message"], f"{case.name}: {text!r} not in: {outcome['message']}"
    assert "Traceback" not in outcome["message"] and "weights_only=False" not in outcome["message"]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_raises_a_clear_error(case, request):
    outcome = outcome_of(case, request)
    check_error(case, outcome)
    if case.cli:  # the same folder through the command line: one `error:` line, non-zero exit
        check_cli(case.name, outcome["cli"])


def check_cli(name: str, cli: dict) -> None:
    assert cli["rc"] not in (0, "traceback"), f"{name}: {cli}"
    lines = [line for line in cli["stderr"].splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {cli['stderr']}"


@pytest.mark.parametrize("i", range(len(FLAG_CASES)), ids=[" ".join(f[1]) for f in FLAG_CASES])
def test_bad_flag_is_one_error_line(i, grouped):
    cli = grouped[f"flags {i}"]["cli"]
    check_cli(" ".join(FLAG_CASES[i][1]), cli)
    assert FLAG_CASES[i][2] in cli["stderr"]


def test_cli_exits_non_zero_with_one_line_in_a_real_process(tmp_path):
    """Cases through the installed command itself: exit status, one stderr line, no traceback."""
    import shutil

    build_good("bert", tmp_path / "good")
    shutil.copytree(tmp_path / "good", tmp_path / "bad")
    CASES_BY_NAME["malicious .bin"].mutate(tmp_path / "bad")
    exe = Path(sys.executable).parent / "pretrained"
    for folder in (tmp_path / "bad", "/mistyped/folder"):
        out = subprocess.run([str(exe), "run", str(folder), "hello"], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert out.returncode != 0
        assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("error: "), out.stderr


def test_any_corrupt_bin_is_a_checkpoint_error(tmp_path):
    """Random bytes make the unpickler fail in many ways (IndexError, KeyError, UnicodeDecodeError, ...): every one
    is a CheckpointError naming the file, never the unpickler's own exception."""
    import random

    from pretrained.weights import CheckpointError, read_weights

    rng = random.Random(0)
    path = tmp_path / "pytorch_model.bin"
    for size in [1, 2, 8, 64, 256] * 40:
        path.write_bytes(bytes(rng.randrange(256) for _ in range(size)))
        with pytest.raises(CheckpointError, match="pytorch_model.bin"):
            read_weights([str(path)])
