"""`import pretrained` is cheap: no torch, no architecture until one is used. Checked in fresh interpreters."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def loaded_after(code: str) -> list[str]:
    """Names of the modules a fresh interpreter has loaded after running `code`."""
    script = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_pretrained_loads_no_torch_and_no_architecture():
    modules = loaded_after("import pretrained")
    assert "pretrained" in modules
    assert "torch" not in modules and "transformers" not in modules and "safetensors" not in modules
    assert not [m for m in modules if m.startswith("pretrained.models")]


def test_auto_classes_load_no_architecture():
    modules = loaded_after("from pretrained import AutoModel, AutoConfig, AutoModelForSequenceClassification")
    assert "pretrained.auto" in modules
    assert "pretrained.models.bert" not in modules and "torch" not in modules


def test_using_one_architecture_loads_only_that_one(minilm_dir):
    modules = loaded_after(f"from pretrained import AutoConfig\nAutoConfig.from_pretrained({minilm_dir!r})")
    assert "pretrained.models.bert_config" in modules
    assert not [m for m in modules if m.startswith(("pretrained.models.gpt2", "pretrained.models.bart"))]
    assert "transformers" not in modules


def test_configs_load_without_torch(minilm_dir):
    """A config alone needs no torch: each family's config class lives in models/<family>_config.py."""
    modules = loaded_after(
        "from pretrained import BertConfig, GPT2Config, BartConfig, AutoConfig\n"
        f"c = AutoConfig.from_pretrained({minilm_dir!r})\n"
        "assert type(c) is BertConfig and c.hidden_size == 384\n"
        "assert AutoConfig.for_model('gpt2', n_layer=2).num_hidden_layers == 2\n"
        "assert BartConfig().num_labels == 3\n"
        "BertConfig(hidden_size=64).save_pretrained(__import__('tempfile').mkdtemp())")
    assert "torch" not in modules and "safetensors" not in modules
    assert not [m for m in modules if m.startswith("pretrained.models.") and not m.endswith("_config")]


def test_config_classes_are_reexported_by_their_family():
    from pretrained.models import bart, bart_config, bert, bert_config, gpt2, gpt2_config

    assert bert.BertConfig is bert_config.BertConfig and gpt2.GPT2Config is gpt2_config.GPT2Config
    assert bart.BartConfig is bart_config.BartConfig


def test_lazy_names():
    import pretrained

    assert pretrained.BertModel.__module__ == "pretrained.models.bert"
    assert pretrained.AutoModel.__name__ == "AutoModel"
    assert "BertForMaskedLM" in dir(pretrained) and "AutoModelForQuestionAnswering" in pretrained.__all__
    with pytest.raises(AttributeError, match="NoSuchModel"):
        pretrained.NoSuchModel


def test_encoder_family_configs_load_without_torch():
    """DistilBERT, MPNet, RoBERTa / XLM-R / CamemBERT and ModernBERT configs, by name and through AutoConfig."""
    names = ["DistilBertConfig", "MPNetConfig", "ModernBertConfig", "RobertaConfig", "XLMRobertaConfig",
             "CamembertConfig"]
    modules = loaded_after(
        f"import pretrained\nfor name in {names!r}:\n    getattr(pretrained, name)()\n"
        "for model_type in ('distilbert', 'mpnet', 'modernbert', 'roberta', 'xlm-roberta', 'camembert'):\n"
        "    assert pretrained.AutoConfig.for_model(model_type).model_type == model_type")
    assert "torch" not in modules
    assert not [m for m in modules if m.startswith("pretrained.models.") and not m.endswith("_config")]
