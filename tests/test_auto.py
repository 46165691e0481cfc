"""Auto classes: the class comes from config.json's model_type; unknown types are named with the known ones."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from pretrained import auto
from pretrained.auto import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM,
                             AutoModelForQuestionAnswering, AutoModelForSequenceClassification,
                             AutoModelForTokenClassification)
from pretrained.models import bert

HEADS = [
    (AutoModel, "BertModel"),
    (AutoModelForSequenceClassification, "BertForSequenceClassification"),
    (AutoModelForMaskedLM, "BertForMaskedLM"),
    (AutoModelForTokenClassification, "BertForTokenClassification"),
    (AutoModelForQuestionAnswering, "BertForQuestionAnswering"),
]


def test_auto_config(minilm_dir):
    config = AutoConfig.from_pretrained(minilm_dir)
    assert type(config) is bert.BertConfig and config.hidden_size == 384
    config = AutoConfig.from_pretrained(minilm_dir, num_labels=4, hidden_dropout_prob=0.0)
    assert config.num_labels == 4 and config.hidden_dropout_prob == 0.0
    made = AutoConfig.for_model("bert", hidden_size=64)
    assert type(made) is bert.BertConfig and made.hidden_size == 64
    with pytest.raises(TypeError, match="from_pretrained"):
        AutoConfig()


@pytest.mark.parametrize("auto_class, name", HEADS, ids=[name for _, name in HEADS])
def test_auto_models_pick_the_class_from_model_type(hf_checkpoint, auto_class, name):
    folder = hf_checkpoint(name)
    model = auto_class.from_pretrained(folder)
    assert type(model) is getattr(bert, name) and not model.training
    state = load_file(os.path.join(folder, "model.safetensors"))
    ours = model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in state.items())
    fresh = auto_class.from_config(model.config)
    assert type(fresh) is getattr(bert, name)
    with pytest.raises(TypeError, match="from_pretrained"):
        auto_class()


def test_auto_model_passes_options_through(hf_checkpoint, minilm_dir):
    model = AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=3, dtype=torch.float16)
    assert model.classifier.weight.shape == (3, 384) and model.dtype == torch.float16
    folder = hf_checkpoint("BertModel")
    config = bert.BertConfig.from_pretrained(folder, hidden_dropout_prob=0.0)
    model = AutoModel.from_pretrained(folder, config=config)
    assert model.config.hidden_dropout_prob == 0.0


def write_config(folder, **fields) -> str:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(fields, f)
    return os.path.join(folder, "config.json")


@pytest.mark.parametrize("load", [AutoConfig.from_pretrained, AutoModel.from_pretrained,
                                  AutoModelForMaskedLM.from_pretrained])
def test_unknown_model_type_is_named_with_the_known_ones(tmp_path, load):
    path = write_config(tmp_path, model_type="llamazing", hidden_size=8)
    with pytest.raises(ValueError) as info:
        load(tmp_path)
    message = str(info.value)
    assert "'llamazing'" in message and path in message
    assert all(known in message for known in ("bert", "gpt2", "bart"))


def test_unknown_model_type_in_code():
    with pytest.raises(ValueError, match="'llamazing'.*bart, bert, .*gpt2"):
        AutoConfig.for_model("llamazing")
    with pytest.raises(ValueError, match="'llamazing'.*bart, bert, .*gpt2"):
        AutoModel.from_config(type("C", (), {"model_type": "llamazing"})())


def test_config_without_model_type(tmp_path):
    path = write_config(tmp_path, hidden_size=8)
    with pytest.raises(ValueError, match="no 'model_type'") as info:
        AutoModel.from_pretrained(tmp_path)
    assert path in str(info.value)


def test_task_that_the_architecture_lacks():
    with pytest.raises(ValueError, match="AutoModelForCausalLM does not support model_type 'bert'; it supports: gpt2"):
        AutoModelForCausalLM.from_config(bert.BertConfig())


def test_registry_tables_name_real_classes():
    for model_type, (module, config_name) in auto.CONFIGS.items():
        # a family module may hold several model types (roberta.py: roberta, xlm-roberta, camembert)
        assert config_name.endswith("Config") and auto.config_class(model_type).model_type == model_type
    for task, table in auto.TASKS.items():
        assert hasattr(auto, task)
        assert set(table) <= set(auto.CONFIGS)
    assert auto.config_class("bert") is bert.BertConfig
    assert auto.model_class("AutoModelForQuestionAnswering", "bert") is bert.BertForQuestionAnswering
