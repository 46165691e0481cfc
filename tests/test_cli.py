"""`pretrained run`: the README's first command, and each head's readable result."""
from __future__ import annotations

import re
import shutil

import pytest
import torch

from pretrained import cli

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]


def test_default_model_prints_embeddings_and_similarities_as_transformers_computes_them(minilm_dir, capsys):
    import transformers

    assert cli.main(["run", *SENTENCES]) == 0
    out = capsys.readouterr().out
    # a sentence-transformers folder: its own modules (mean pooling, Normalize) run
    assert "SentenceTransformer: BertModel" in out and "Pooling(mean) -> Normalize" in out
    assert "sentence embeddings: (3, 384)" in out
    rows = [line for line in out.splitlines() if line.strip().startswith(tuple(s[:20] for s in SENTENCES))
            and re.search(r"\d\.\d{3}\s*$", line)]
    printed = torch.tensor([[float(v) for v in re.findall(r"-?\d\.\d{3}", row)[-3:]] for row in rows])

    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    model = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"][..., None].float()
    emb = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    assert printed.shape == (3, 3)
    assert torch.allclose(printed, emb @ emb.T, atol=6e-4)
    assert printed[0, 1] > 0.7 > printed[0, 2]  # the two sentences about eating are the similar ones


def _tiny_head(arch: str, minilm_dir: str, folder, **config) -> None:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=37, **config)
    getattr(transformers, arch)(cfg).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(f"{minilm_dir}/{name}", folder)


def test_classifier_prints_each_label_with_its_probability(minilm_dir, tmp_path, capsys):
    _tiny_head("BertForSequenceClassification", minilm_dir, tmp_path,
               id2label={0: "negative", 1: "neutral", 2: "positive"})
    assert cli.main(["run", str(tmp_path), "great film", "awful film"]) == 0
    out = capsys.readouterr().out
    assert "BertForSequenceClassification" in out
    probs = [float(p) for p in re.findall(r"^\s+(?:negative|neutral|positive)\s+(\d\.\d{4})$", out, re.M)]
    assert len(probs) == 6 and abs(sum(probs[:3]) - 1) < 2e-3 and abs(sum(probs[3:]) - 1) < 2e-3


def test_masked_lm_prints_top_fills(minilm_dir, tmp_path, capsys):
    _tiny_head("BertForMaskedLM", minilm_dir, tmp_path)
    assert cli.main(["run", str(tmp_path), "Paris is the [MASK] of France.", "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "[MASK] at token" in line)
    assert len(re.findall(r"\(\d\.\d{3}\)", line)) == 3


@pytest.mark.parametrize("words, model_is_first", [
    (["hello"], False),                        # one word: always text
    (["Paris", "London"], False),              # plain words
    (["org/name", "some text"], True),          # a Hub id, then text
    (["bert-base-cased", "some text"], False),  # a bare name not in the cache: text (use --model for it)
    (["e-mail", "spam"], False),
])
def test_model_or_text(words, model_is_first, minilm_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    model, texts = cli.split_model_and_texts(words, None)
    assert (model == words[0]) == model_is_first
    assert texts == (words[1:] if model_is_first else words)


def test_missing_model_folder_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["run", "--model", str(tmp_path), "text"]) == 1
    assert "config.json" in capsys.readouterr().err
