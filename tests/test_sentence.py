"""SentenceTransformer and CrossEncoder against sentence-transformers itself (the oracle, test-only).

Tiny seeded, perturbed encoders are saved by transformers; sentence-transformers builds its module chains on
them (each pooling mode, Dense, Normalize, prompts) and saves the folders that pretrained then loads. The real
all-MiniLM-L6-v2 is checked too. Numbers must agree within `tol` (conftest: 1e-5 in exact mode, 1e-4 in default mode).
"""
from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import perturb
from pretrained import CrossEncoder, SentenceTransformer
from pretrained.configuration import ConfigError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
SENTENCES = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "", "x", "Ünïcödé, emoji 🙂 and 漢字 in one line.", "word " * 40, "A man is riding a horse.",
    "Two dogs play in the snow; one of them is much, much larger than the other.",
]


def st_models():
    """sentence-transformers' module classes (Transformer, Pooling, Dense, Normalize)."""
    try:
        from sentence_transformers.sentence_transformer import modules  # 6.x
    except ImportError:
        from sentence_transformers import models as modules  # earlier releases
    return modules


def diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


# --------------------------------------------------------------------------------------------- fixtures
# Tiny encoders of each family pretrained supports, built and saved by transformers, with a real tokenizer.
# They share all-MiniLM-L6-v2's WordPiece tokenizer: the families differ in the model, which is what is tested.
FAMILIES = {
    "bert": ("BertConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                                max_position_embeddings=64)),
    "roberta": ("RobertaConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=37, max_position_embeddings=64, pad_token_id=0,
                                      bos_token_id=101, eos_token_id=102)),
    "xlm-roberta": ("XLMRobertaConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=37, max_position_embeddings=64, pad_token_id=0,
                                             bos_token_id=101, eos_token_id=102)),
    "distilbert": ("DistilBertConfig", dict(dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=64)),
    "mpnet": ("MPNetConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                                  max_position_embeddings=64)),
    # no token_type_ids in its forward: the tokenizer's are dropped, as sentence-transformers drops them
    "modernbert": ("ModernBertConfig", dict(hidden_size=32, intermediate_size=24, num_hidden_layers=3,
                                            num_attention_heads=2, local_attention=4, max_position_embeddings=128,
                                            pad_token_id=0, bos_token_id=101, eos_token_id=102, cls_token_id=101,
                                            sep_token_id=102)),
    # a decoder, as Qwen3-Embedding: last-token pooling, left padding
    "qwen3": ("Qwen3Config", dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                                  num_key_value_heads=1, head_dim=16, max_position_embeddings=64, pad_token_id=0)),
}
LEFT_PADDED = {"qwen3"}


def _save_tiny(minilm_dir: str, folder, family: str, arch: str, **extra) -> str:
    import transformers

    config_class, sizes = FAMILIES[family]
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(vocab_size=30522, **sizes, **extra)
    model = getattr(transformers, arch)(config)
    perturb(model)
    model.eval().save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(minilm_dir, name), folder)
    if family in LEFT_PADDED:
        path = os.path.join(folder, "tokenizer_config.json")
        with open(path) as f:
            settings = json.load(f)
        with open(path, "w") as f:
            json.dump({**settings, "padding_side": "left"}, f)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_encoder(minilm_dir, tmp_path_factory):
    made = {}

    def make(family: str = "bert") -> str:
        if family not in made:
            made[family] = _save_tiny(minilm_dir, tmp_path_factory.mktemp(f"enc-{family}"), family,
                                      FAMILIES[family][0].replace("Config", "Model"))
        return made[family]

    return make


def st_saved(encoder_dir: str, folder, pooling="mean", dense=False, normalize=False, include_prompt=True,
             max_seq_length=24, **st_kwargs):
    """A folder that sentence-transformers saves: Transformer + Pooling (+ Dense) (+ Normalize)."""
    import sentence_transformers

    m = st_models()
    transformer = m.Transformer(encoder_dir, max_seq_length=max_seq_length)
    modules = [transformer, m.Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling,
                                      include_prompt=include_prompt)]
    if dense:
        torch.manual_seed(1)
        modules.append(m.Dense(modules[-1].get_embedding_dimension(), 16, activation_function=torch.nn.GELU()))
        with torch.no_grad():
            modules[-1].linear.bias.normal_()
    if normalize:
        modules.append(m.Normalize())
    model = sentence_transformers.SentenceTransformer(modules=modules, device="cpu", **st_kwargs)
    model.save(str(folder))
    return model


# ------------------------------------------------------------------------------------ SentenceTransformer
def test_minilm_equals_sentence_transformers(minilm_dir, tol):
    import sentence_transformers

    ours = SentenceTransformer(minilm_dir, device="cpu")
    theirs = sentence_transformers.SentenceTransformer(minilm_dir, device="cpu")
    a, b = ours.encode(SENTENCES, batch_size=4), theirs.encode(SENTENCES, batch_size=4)
    assert isinstance(a, np.ndarray) and a.shape == (len(SENTENCES), 384) and a.dtype == np.float32
    assert diff(a, b) <= tol
    assert diff(ours.similarity(a, a), theirs.similarity(b, b)) <= tol
    assert diff(ours.similarity_pairwise(a, a[::-1].copy()), theirs.similarity_pairwise(b, b[::-1].copy())) <= tol
    assert ours.get_sentence_embedding_dimension() == 384 and ours.max_seq_length == theirs.max_seq_length == 256
    one = ours.encode("A man is eating food.")
    assert one.shape == (384,) and diff(one, b[0]) <= tol
    t = ours.encode(SENTENCES[:3], convert_to_tensor=True)
    assert isinstance(t, torch.Tensor) and diff(t, b[:3]) <= tol
    rows = ours.encode(SENTENCES[:3], convert_to_numpy=False)
    assert isinstance(rows, list) and len(rows) == 3 and diff(rows[1], b[1]) <= tol
    tokens, their_tokens = (m.encode(SENTENCES, output_value="token_embeddings") for m in (ours, theirs))
    assert [t.shape for t in tokens] == [t.shape for t in their_tokens]
    assert max(diff(x, y) for x, y in zip(tokens, their_tokens)) <= tol


@pytest.mark.parametrize("pooling, dense, normalize", [
    ("mean", False, False), ("cls", False, True), ("max", True, False), ("mean_sqrt_len_tokens", True, True),
    ("weightedmean", False, False), ("lasttoken", True, False), (("cls", "mean", "max"), False, True),
])
def test_saved_module_chains_equal_sentence_transformers(tiny_encoder, tmp_path, pooling, dense, normalize, tol):
    theirs = st_saved(tiny_encoder(), tmp_path, pooling, dense, normalize)
    ours = SentenceTransformer(str(tmp_path), device="cpu")
    assert [type(m).__name__ for m in ours] == [type(m).__name__ for m in theirs]
    assert ours.get_sentence_embedding_dimension() == theirs.get_embedding_dimension()
    assert ours.max_seq_length == theirs.max_seq_length == 24  # long sentences are cut
    assert diff(ours.encode(SENTENCES, batch_size=3), theirs.encode(SENTENCES, batch_size=3)) <= tol
    kw = dict(normalize_embeddings=True, truncate_dim=8, batch_size=5)
    assert diff(ours.encode(SENTENCES, **kw), theirs.encode(SENTENCES, **kw)) <= tol


# Each family as its popular checkpoints use it: all-distilroberta-v1's mean + Normalize, bge-m3's CLS +
# Normalize (XLM-R), CLS + Dense, all-mpnet-base-v2's mean + Normalize, gte-modernbert's CLS + Normalize.
@pytest.mark.parametrize("family, pooling, dense, normalize", [
    ("roberta", "mean", False, True), ("xlm-roberta", "cls", False, True), ("distilbert", "cls", True, False), ("mpnet", "mean", False, True), ("modernbert", "cls", False, True),
    ("modernbert", "weightedmean", True, False),
])
def test_each_family_equals_sentence_transformers(tiny_encoder, tmp_path, family, pooling, dense, normalize, tol):
    theirs = st_saved(tiny_encoder(family), tmp_path, pooling, dense, normalize)
    ours = SentenceTransformer(str(tmp_path), device="cpu")
    assert type(ours[0].auto_model).__name__ == type(theirs[0].model).__name__
    assert diff(ours.encode(SENTENCES, batch_size=3), theirs.encode(SENTENCES, batch_size=3)) <= tol
    kw = dict(prompt="query: ", output_value="token_embeddings")
    tokens, their_tokens = ours.encode(SENTENCES, **kw), theirs.encode(SENTENCES, **kw)
    assert max(diff(x, y) for x, y in zip(tokens, their_tokens)) <= tol


def test_decoder_with_last_token_pooling_and_left_padding(minilm_dir, tiny_encoder, tmp_path, tol):
    """Qwen3-Embedding's layout: a decoder, left padding, last-token pooling, Normalize, an instruction prompt
    (also left out of a mean with include_prompt=False); a plain *ForCausalLM folder gets last-token pooling."""
    import sentence_transformers

    theirs = st_saved(tiny_encoder("qwen3"), tmp_path / "last", "lasttoken", normalize=True,
                      prompts={"query": "Instruct: find the answer\nQuery: "})
    ours = SentenceTransformer(str(tmp_path / "last"), device="cpu")
    assert ours.tokenizer.padding_side == "left"
    for kwargs in ({}, {"prompt_name": "query"}):
        assert diff(ours.encode(SENTENCES, batch_size=4, **kwargs),
                    theirs.encode(SENTENCES, batch_size=4, **kwargs)) <= tol
    theirs = st_saved(tiny_encoder("qwen3"), tmp_path / "mean", ("mean", "weightedmean", "cls"), include_prompt=False,
                      prompts={"query": "Instruct: find the answer\nQuery: "})
    ours = SentenceTransformer(str(tmp_path / "mean"), device="cpu")
    kw = dict(prompt_name="query", batch_size=4)
    assert diff(ours.encode(SENTENCES, **kw), theirs.encode(SENTENCES, **kw)) <= tol
    causal = _save_tiny(minilm_dir, tmp_path / "causal", "qwen3", "Qwen3ForCausalLM")
    ours = SentenceTransformer(causal, device="cpu")
    theirs = sentence_transformers.SentenceTransformer(causal, device="cpu")
    assert ours[1].modes == ("lasttoken",)
    assert diff(ours.encode(SENTENCES, batch_size=4), theirs.encode(SENTENCES, batch_size=4)) <= tol


def test_plain_transformers_folder_gets_mean_pooling(tiny_encoder, tol):
    import sentence_transformers

    ours = SentenceTransformer(tiny_encoder(), device="cpu")
    theirs = sentence_transformers.SentenceTransformer(tiny_encoder(), device="cpu")
    assert [type(m).__name__ for m in ours] == ["Transformer", "Pooling"] and ours[1].modes == ("mean",)
    assert diff(ours.encode(SENTENCES, batch_size=4), theirs.encode(SENTENCES, batch_size=4)) <= tol


def test_prompts_default_prompt_and_include_prompt(tiny_encoder, tmp_path, tol):
    theirs = st_saved(tiny_encoder(), tmp_path, "mean", include_prompt=False,
                      prompts={"query": "query: ", "passage": "passage: "}, default_prompt_name="passage")
    ours = SentenceTransformer(str(tmp_path), device="cpu")
    assert ours.prompts["query"] == "query: " and ours.default_prompt_name == "passage"
    for kwargs in ({}, {"prompt_name": "query"}, {"prompt": "Represent this sentence: "}, {"prompt_name": "document"}):
        assert diff(ours.encode(SENTENCES, **kwargs), theirs.encode(SENTENCES, **kwargs)) <= tol, kwargs
    assert diff(ours.encode_query(SENTENCES), theirs.encode_query(SENTENCES)) <= tol
    assert diff(ours.encode_document(SENTENCES), theirs.encode_document(SENTENCES)) <= tol
    # include_prompt=False really drops the prompt tokens: with it kept, the vectors differ
    ours[1].include_prompt = True
    assert diff(ours.encode(SENTENCES[:2], prompt_name="query"), theirs.encode(SENTENCES[:2], prompt_name="query")) > 1e-3


def test_truncate_dim_similarity_fn_and_save_roundtrip(tiny_encoder, tmp_path, tol):
    import sentence_transformers

    st_saved(tiny_encoder(), tmp_path / "st", "cls", dense=True, similarity_fn_name="dot",
             prompts={"query": "q: "})
    ours = SentenceTransformer(str(tmp_path / "st"), device="cpu", truncate_dim=8)
    theirs = sentence_transformers.SentenceTransformer(str(tmp_path / "st"), device="cpu", truncate_dim=8)
    assert ours.similarity_fn_name == "dot" and ours.get_sentence_embedding_dimension() == 8
    a, b = ours.encode(SENTENCES), theirs.encode(SENTENCES)
    assert a.shape == (len(SENTENCES), 8) and diff(a, b) <= tol
    assert diff(ours.similarity(a, a), theirs.similarity(b, b)) <= tol
    for name in ("euclidean", "manhattan", "cosine"):
        ours.similarity_fn_name = theirs.similarity_fn_name = name
        assert diff(ours.similarity(a, b), theirs.similarity(a, b)) <= tol
        assert diff(ours.similarity_pairwise(a, b[::-1].copy()), theirs.similarity_pairwise(a, b[::-1].copy())) <= tol

    ours.max_seq_length = 12
    ours.save(str(tmp_path / "ours"))
    again = sentence_transformers.SentenceTransformer(str(tmp_path / "ours"), device="cpu")
    reloaded = SentenceTransformer(str(tmp_path / "ours"), device="cpu")
    assert again.max_seq_length == reloaded.max_seq_length == 12 and again.truncate_dim == 8
    assert again.prompts["query"] == "q: " and again.similarity_fn_name == "cosine"
    assert diff(again.encode(SENTENCES), ours.encode(SENTENCES)) <= tol
    assert diff(reloaded.encode(SENTENCES), ours.encode(SENTENCES)) <= tol


def test_precisions_and_output_value_none(minilm_dir, tol):
    import sentence_transformers

    ours = SentenceTransformer(minilm_dir, device="cpu")
    theirs = sentence_transformers.SentenceTransformer(minilm_dir, device="cpu")
    for precision in ("int8", "uint8", "binary", "ubinary"):
        a, b = ours.encode(SENTENCES, precision=precision), theirs.encode(SENTENCES, precision=precision)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.abs(a.astype(int) - b.astype(int)).max() <= (1 if precision.endswith("int8") else 0)
    rows = ours.encode(SENTENCES[:2], output_value=None)
    assert isinstance(rows, list) and set(rows[0]) >= {"input_ids", "attention_mask", "token_embeddings",
                                                       "sentence_embedding"}
    assert diff(rows[1]["sentence_embedding"], theirs.encode(SENTENCES[1])) <= tol


def test_progress_bar_when_asked_and_by_log_level(minilm_dir, capsys):
    ours = SentenceTransformer(minilm_dir, device="cpu")
    ours.encode(SENTENCES, batch_size=2, show_progress_bar=True)
    assert "Batches" in capsys.readouterr().err
    ours.encode(SENTENCES, batch_size=2)
    assert "Batches" not in capsys.readouterr().err
    logger = logging.getLogger("pretrained.sentence")
    level = logger.level
    logger.setLevel(logging.INFO)  # sentence-transformers' rule: a bar when INFO messages would show
    try:
        ours.encode(SENTENCES, batch_size=2)
    finally:
        logger.setLevel(level)
    assert "Batches" in capsys.readouterr().err


def test_empty_input_and_order_kept(minilm_dir, monkeypatch, tol):
    from pretrained import sentence

    ours = SentenceTransformer(minilm_dir, device="cpu")
    assert ours.encode([]).shape == (0,)
    assert ours.encode([], convert_to_tensor=True).shape == (0, 384)
    shuffled = SENTENCES[::-1]
    expected = ours.encode(SENTENCES, batch_size=3)
    assert diff(ours.encode(shuffled, batch_size=2), expected[::-1]) <= tol
    monkeypatch.setattr(sentence, "CHUNK", 4)  # texts are tokenised and sorted in chunks of CHUNK
    assert diff(ours.encode(SENTENCES, batch_size=3), expected) <= tol
    tokens = ours.encode(SENTENCES, output_value="token_embeddings")
    assert [len(t) for t in tokens] == [len(ids) for ids in ours.tokenizer(SENTENCES, truncation=True)["input_ids"]]


# ------------------------------------------------------------------------------------------------ errors
def test_bad_inputs_and_folders_give_clear_errors(tiny_encoder, tmp_path, minilm_dir):
    ours = SentenceTransformer(minilm_dir, device="cpu")
    with pytest.raises(TypeError, match=r"sentences\[2\] must be a str, got int"):
        ours.encode(["a", "b", 3])
    with pytest.raises(ValueError, match="unknown prompt name 'nope'.*'document', 'query'"):
        ours.encode(["a"], prompt_name="nope")

    st_saved(tiny_encoder(), tmp_path / "m", "mean")
    folder = tmp_path / "m"
    modules = json.loads((folder / "modules.json").read_text())
    for bad_type in ("sentence_transformers.models.LSTM", "custom_code.MyPooling"):
        changed = modules + [{"idx": 2, "name": "2", "path": "2_X", "type": bad_type}]
        (folder / "modules.json").write_text(json.dumps(changed))
        with pytest.raises(ValueError, match=rf"module type '{bad_type}'.*trust_remote_code"):
            SentenceTransformer(str(folder), device="cpu")
    (folder / "modules.json").write_text(json.dumps(modules))
    pooling = folder / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({"embedding_dimension": 32, "pooling_mode": "median"}))
    with pytest.raises(ConfigError, match="unknown pooling mode 'median'.*cls, max, mean"):
        SentenceTransformer(str(folder), device="cpu")
    pooling.write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_median_tokens": True}))
    with pytest.raises(ConfigError, match="pooling_mode_median_tokens"):
        SentenceTransformer(str(folder), device="cpu")


# ---------------------------------------------------------------------------------------------- CrossEncoder
@pytest.fixture(scope="module")
def tiny_classifier(minilm_dir, tmp_path_factory):
    made = {}

    def make(family: str = "bert", num_labels: int = 1) -> str:
        key = (family, num_labels)
        if key not in made:
            arch = FAMILIES[family][0].replace("Config", "ForSequenceClassification")
            made[key] = _save_tiny(minilm_dir, tmp_path_factory.mktemp(f"ce-{family}"), family, arch,
                                   num_labels=num_labels)
        return made[key]

    return make


PAIRS = [("How many people live in Berlin?", "Berlin has a population of 3.5 million."),
         ("How many people live in Berlin?", "Berlin is well known for its museums."),
         ("what is the capital of France", "Paris " * 30), ("a", ""), ("Ünïcödé?", "漢字 🙂")]


@pytest.mark.parametrize("family, num_labels", [("bert", 1), ("bert", 3), ("xlm-roberta", 1), ("roberta", 3),
                                               ("distilbert", 1), ("mpnet", 3), ("modernbert", 1)])
def test_cross_encoder_predict_and_rank_equal_sentence_transformers(tiny_classifier, family, num_labels, tol):
    import sentence_transformers

    folder = tiny_classifier(family, num_labels=num_labels)
    ours = CrossEncoder(folder, device="cpu")
    theirs = sentence_transformers.CrossEncoder(folder, device="cpu")
    assert type(ours.activation_fn) is type(theirs.activation_fn)  # Sigmoid for one label, else Identity
    assert ours.max_length == theirs.max_seq_length
    a, b = ours.predict(PAIRS, batch_size=2), theirs.predict(PAIRS, batch_size=2)
    assert a.shape == b.shape == ((5,) if num_labels == 1 else (5, 3)) and diff(a, b) <= tol
    assert diff(ours.predict(PAIRS[0]), theirs.predict(PAIRS[0])) <= tol
    kw = dict(apply_softmax=True, activation_fn=torch.nn.Identity())
    assert diff(ours.predict(PAIRS, **kw), theirs.predict(PAIRS, **kw)) <= tol
    t = ours.predict(PAIRS, convert_to_tensor=True)
    assert isinstance(t, torch.Tensor) and diff(t, b) <= tol
    if num_labels == 1:
        query, docs = PAIRS[0][0], [d for _, d in PAIRS]
        mine, ref = ours.rank(query, docs, return_documents=True), theirs.rank(query, docs, return_documents=True)
        assert [r["corpus_id"] for r in mine] == [r["corpus_id"] for r in ref]
        assert [r["text"] for r in mine] == [r["text"] for r in ref]
        assert max(abs(x["score"] - y["score"]) for x, y in zip(mine, ref)) <= tol
        assert len(ours.rank(query, docs, top_k=2)) == 2 and "text" not in ours.rank(query, docs)[0]
    else:
        with pytest.raises(ValueError, match="num_labels=1"):
            ours.rank("q", ["d"])


def test_cross_encoder_max_length_and_saved_folders(tiny_classifier, tmp_path, tol):
    import sentence_transformers

    folder = tiny_classifier(num_labels=1)
    ours = CrossEncoder(folder, max_length=8, activation_fn=torch.nn.Identity(), device="cpu")
    theirs = sentence_transformers.CrossEncoder(folder, max_length=8, activation_fn=torch.nn.Identity(), device="cpu")
    assert diff(ours.predict(PAIRS), theirs.predict(PAIRS)) <= tol
    # sentence-transformers' save (activation in config_sentence_transformers.json) -> ours, and ours -> theirs
    theirs.save(str(tmp_path / "st"))
    loaded = CrossEncoder(str(tmp_path / "st"), device="cpu")
    assert isinstance(loaded.activation_fn, torch.nn.Identity)
    assert diff(loaded.predict(PAIRS), theirs.predict(PAIRS)) <= tol
    ours.save(str(tmp_path / "ours"))
    again = sentence_transformers.CrossEncoder(str(tmp_path / "ours"), device="cpu")
    assert isinstance(again.activation_fn, torch.nn.Identity) and again.max_seq_length == 8
    assert diff(again.predict(PAIRS), ours.predict(PAIRS)) <= tol


def test_cross_encoder_bad_pairs_and_progress_bar(tiny_classifier, capsys):
    ours = CrossEncoder(tiny_classifier(num_labels=1), device="cpu")
    ours.predict(PAIRS, batch_size=2, show_progress_bar=True)
    assert "Batches" in capsys.readouterr().err
    with pytest.raises(TypeError, match=r"sentences\[1\]\[0\] must be a str, got int"):
        ours.predict([("a", "b"), (1, "c")])
    with pytest.raises(ValueError, match=r"sentences\[0\] must be a pair"):
        ours.predict([("a", "b", "c")])


# --------------------------------------------------------------------------------------------------- CLI
def _printed_rows(out: str, n: int) -> list[list[float]]:
    import re

    rows = [line for line in out.splitlines() if re.search(r"-?\d\.\d{3}\s*$", line) and "[" not in line]
    return [[float(v) for v in re.findall(r"-?\d+\.\d{3}", row)[-n:]] for row in rows]


def test_cli_runs_a_sentence_transformers_folder_with_its_modules_and_prompt(tiny_encoder, tmp_path, capsys):
    from pretrained import cli

    texts = SENTENCES[:3]
    theirs = st_saved(tiny_encoder(), tmp_path, "max", dense=True, similarity_fn_name="dot",
                      prompts={"query": "query: "}, default_prompt_name="query")
    assert cli.main(["run", str(tmp_path), *texts]) == 0
    out = capsys.readouterr().out
    assert "Pooling(max) -> Dense(32->16, GELU)" in out and "prompt 'query': 'query: '" in out
    assert "sentence embeddings: (3, 16)" in out and "dot similarity:" in out
    emb = theirs.encode(texts, convert_to_tensor=True)  # the default prompt applies
    assert np.allclose(_printed_rows(out, 3), theirs.similarity(emb, emb).numpy(), atol=6e-4)
    assert cli.main(["run", str(tmp_path), *texts, "--prompt-name", "nope"]) == 1
    assert "unknown prompt name 'nope'" in capsys.readouterr().err


def test_cli_ranks_documents_with_a_reranker(tiny_classifier, capsys):
    import sentence_transformers
    from pretrained import cli

    folder = tiny_classifier(num_labels=1)  # one label: a reranker
    query, docs = PAIRS[0][0], [d for _, d in PAIRS]
    assert cli.main(["run", folder, query, *docs]) == 0
    out = capsys.readouterr().out
    assert "CrossEncoder: BertForSequenceClassification" in out and "Sigmoid" in out
    ranked = sentence_transformers.CrossEncoder(folder, device="cpu").rank(query, docs)
    lines = [line for line in out.splitlines() if line.strip()[:2] in {f"{i}." for i in range(1, 6)}]
    assert [float(line.split()[1]) for line in lines] == pytest.approx([r["score"] for r in ranked], abs=1e-4)
    with pytest.raises(SystemExit, match="needs a query and at least one document"):
        cli.main(["run", folder, "only a query"])


def test_cli_keeps_labels_for_multi_label_classifiers(tiny_classifier, tmp_path, capsys):
    import sentence_transformers
    from pretrained import cli

    assert cli.main(["run", tiny_classifier(num_labels=3), "great film"]) == 0
    out = capsys.readouterr().out
    assert "LABEL_2" in out and "CrossEncoder" not in out
    # saved by sentence-transformers as a CrossEncoder (an NLI model): label probabilities per pair
    theirs = sentence_transformers.CrossEncoder(tiny_classifier(num_labels=3), device="cpu")
    theirs.save(str(tmp_path))
    assert cli.main(["run", str(tmp_path), "A man eats.", "Someone eats.", "Nobody eats."]) == 0
    out = capsys.readouterr().out
    probs = theirs.predict([("A man eats.", "Someone eats."), ("A man eats.", "Nobody eats.")], apply_softmax=True)
    shown = [float(line.split()[-1]) for line in out.splitlines() if line.strip().startswith("LABEL_")]
    assert "CrossEncoder" in out and sorted(shown) == pytest.approx(sorted(probs.ravel().tolist()), abs=1e-4)


def test_cross_encoder_reads_the_activation_older_releases_saved(tiny_classifier, tmp_path, tol):
    """sentence-transformers 4-5 kept the activation in config.json (`sentence_transformers.activation_fn`),
    earlier ones as `sbert_ce_default_activation_function`."""
    import sentence_transformers

    for key, value in (("sentence_transformers", {"activation_fn": "torch.nn.modules.linear.Identity"}),
                       ("sbert_ce_default_activation_function", "torch.nn.modules.activation.Tanh")):
        folder = tmp_path / key
        shutil.copytree(tiny_classifier(num_labels=1), folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, key: value}))
        ours = CrossEncoder(str(folder), device="cpu")
        theirs = sentence_transformers.CrossEncoder(str(folder), device="cpu")
        assert type(ours.activation_fn) is type(theirs.activation_fn) is not torch.nn.Sigmoid
        assert diff(ours.predict(PAIRS), theirs.predict(PAIRS)) <= tol


# --------------------------------------------------------------------------------------------------- Hub
def test_hub_id_loads_the_modules_through_the_cache(tiny_encoder, tmp_path, tol):
    """A bare id is looked up under sentence-transformers/, as sentence-transformers does; the module folders
    (1_Pooling, 2_Dense) come through the same Hub cache; a warm load asks the Hub once."""
    from hub_server import HubServer
    from test_hub import ok, run_py

    theirs = st_saved(tiny_encoder(), tmp_path / "st", "cls", dense=True, normalize=True)
    code = """
    from pretrained import SentenceTransformer
    model = SentenceTransformer("tiny-st", device="cpu")
    result["modules"] = [type(m).__name__ for m in model]
    result["embeddings"] = model.encode(TEXTS).tolist()
    """.replace("TEXTS", repr(SENTENCES))
    with HubServer() as hub:
        hub.add_repo("sentence-transformers/tiny-st", tmp_path / "st")
        hub.add_repo("plain-encoder", tiny_encoder())  # not under sentence-transformers/: the bare id is used
        cold = ok(run_py(code, home=tmp_path / "home", hub=hub))
        hub.reset()
        warm = ok(run_py(code, home=tmp_path / "home", hub=hub))
        calls = [str(h) for h in hub.hits if "/api/agent-harnesses" not in h.path]
        cli_run = ok(run_py("""
        import contextlib, io
        from pretrained import cli, SentenceTransformer
        result["plain"] = [type(m).__name__ for m in SentenceTransformer("plain-encoder", device="cpu")]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            result["code"] = cli.main(["run", "sentence-transformers/tiny-st", "one text", "another text"])
        result["out"] = out.getvalue()
        """, home=tmp_path / "cli-home", hub=hub))
    assert cli_run["plain"] == ["Transformer", "Pooling"]
    assert cli_run["code"] == 0 and "Pooling(cls) -> Dense(32->16, GELU) -> Normalize" in cli_run["out"]
    assert cold["modules"] == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert diff(cold["embeddings"], theirs.encode(SENTENCES)) <= tol
    assert warm["embeddings"] == cold["embeddings"]
    assert len(calls) == 1 and "/api/models/sentence-transformers/tiny-st" in calls[0], calls
