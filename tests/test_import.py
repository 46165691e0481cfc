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
    assert "pretrained.models.bert" in modules
    assert "pretrained.models.gpt2" not in modules and "pretrained.models.bart" not in modules
    assert "transformers" not in modules


def test_lazy_names():
    import pretrained

    assert pretrained.BertModel.__module__ == "pretrained.models.bert"
    assert pretrained.AutoModel.__name__ == "AutoModel"
    assert "BertForMaskedLM" in dir(pretrained) and "AutoModelForQuestionAnswering" in pretrained.__all__
    with pytest.raises(AttributeError, match="NoSuchModel"):
        pretrained.NoSuchModel
