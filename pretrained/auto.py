"""Auto classes: read `model_type` from config.json and pick the architecture's class.

The registry is a table of strings, so nothing is imported until a model type is used. A config needs no
torch: `CONFIGS["bert"] = ("bert", "BertConfig")` means the config class lives in the torch-free
`pretrained/models/bert_config.py` (importing only `..configuration`) and the models in `models/bert.py`,
which re-exports the config. A new family follows the same pattern: add `<family>_config.py`, `<family>.py`,
one line here and the class names in TASKS.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any

from .configuration import PretrainedConfig, read_config_dict
from .hub import Source, pop_hub_options

# model_type -> (family module under pretrained.models, config class in `<family>_config.py`)
CONFIGS: dict[str, tuple[str, str]] = {
    "bert": ("bert", "BertConfig"),
    "gpt2": ("gpt2", "GPT2Config"),
    "bart": ("bart", "BartConfig"),
    "llama": ("llama", "LlamaConfig"),
    "mistral": ("mistral", "MistralConfig"),
    "qwen2": ("qwen2", "Qwen2Config"),
    "qwen3": ("qwen3", "Qwen3Config"),
    "distilbert": ("distilbert", "DistilBertConfig"),
    "mpnet": ("mpnet", "MPNetConfig"),
    "modernbert": ("modernbert", "ModernBertConfig"),
    "roberta": ("roberta", "RobertaConfig"),
    "xlm-roberta": ("roberta", "XLMRobertaConfig"),
    "camembert": ("roberta", "CamembertConfig"),
}
# task -> model_type -> class name in that module
TASKS: dict[str, dict[str, str]] = {
    "AutoModel": {"bert": "BertModel", "gpt2": "GPT2Model", "bart": "BartModel", "llama": "LlamaModel",
                  "mistral": "MistralModel", "qwen2": "Qwen2Model", "qwen3": "Qwen3Model",
                  "distilbert": "DistilBertModel", "mpnet": "MPNetModel", "modernbert": "ModernBertModel",
                  "roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel", "camembert": "CamembertModel"},
    "AutoModelForSequenceClassification": {"bert": "BertForSequenceClassification",
                                           "gpt2": "GPT2ForSequenceClassification",
                                           "bart": "BartForSequenceClassification",
                                           "llama": "LlamaForSequenceClassification",
                                           "mistral": "MistralForSequenceClassification",
                                           "qwen2": "Qwen2ForSequenceClassification",
                                           "qwen3": "Qwen3ForSequenceClassification",
                                           "distilbert": "DistilBertForSequenceClassification",
                                           "mpnet": "MPNetForSequenceClassification",
                                           "modernbert": "ModernBertForSequenceClassification",
                                           "roberta": "RobertaForSequenceClassification",
                                           "xlm-roberta": "XLMRobertaForSequenceClassification",
                                           "camembert": "CamembertForSequenceClassification"},
    "AutoModelForMaskedLM": {"bert": "BertForMaskedLM",
                             "distilbert": "DistilBertForMaskedLM", "mpnet": "MPNetForMaskedLM",
                             "modernbert": "ModernBertForMaskedLM",
                             "roberta": "RobertaForMaskedLM",
                             "xlm-roberta": "XLMRobertaForMaskedLM",
                             "camembert": "CamembertForMaskedLM"},
    "AutoModelForTokenClassification": {"bert": "BertForTokenClassification",
                                        "distilbert": "DistilBertForTokenClassification",
                                        "mpnet": "MPNetForTokenClassification",
                                        "modernbert": "ModernBertForTokenClassification",
                                        "roberta": "RobertaForTokenClassification",
                                        "xlm-roberta": "XLMRobertaForTokenClassification",
                                        "camembert": "CamembertForTokenClassification"},
    "AutoModelForQuestionAnswering": {"bert": "BertForQuestionAnswering",
                                      "distilbert": "DistilBertForQuestionAnswering",
                                      "mpnet": "MPNetForQuestionAnswering",
                                      "modernbert": "ModernBertForQuestionAnswering",
                                      "roberta": "RobertaForQuestionAnswering",
                                      "xlm-roberta": "XLMRobertaForQuestionAnswering",
                                      "camembert": "CamembertForQuestionAnswering"},
    "AutoModelForCausalLM": {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                             "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"},
    "AutoModelForSeq2SeqLM": {"bart": "BartForConditionalGeneration"},
}


def _module(model_type: str):
    if model_type not in CONFIGS:
        raise ValueError(f"unknown model_type {model_type!r}; pretrained supports: {', '.join(sorted(CONFIGS))}")
    return importlib.import_module(f"pretrained.models.{CONFIGS[model_type][0]}")


def _config_module(model_type: str):
    """`pretrained.models.<family>_config` (torch-free); a family without one keeps its config in `<family>.py`."""
    if model_type not in CONFIGS:
        raise ValueError(f"unknown model_type {model_type!r}; pretrained supports: {', '.join(sorted(CONFIGS))}")
    name = f"pretrained.models.{CONFIGS[model_type][0]}_config"
    if importlib.util.find_spec(name) is None:
        return _module(model_type)
    return importlib.import_module(name)


def config_class(model_type: str) -> type[PretrainedConfig]:
    """The config class registered for `model_type`; an unknown type raises ValueError listing the known ones.
    Imports only the family's config module, so no torch."""
    return getattr(_config_module(model_type), CONFIGS[model_type][1])


def model_class(task: str, model_type: str):
    """The class that `task` (an Auto class name) uses for `model_type`."""
    table = TASKS[task]
    _module(model_type)  # unknown model types get the full list of supported ones
    if model_type not in table:
        raise ValueError(f"{task} does not support model_type {model_type!r}; "
                         f"it supports: {', '.join(sorted(table))}")
    return getattr(_module(model_type), table[model_type])


class AutoConfig:
    """`AutoConfig.from_pretrained(name_or_path)` returns the config class that config.json's model_type names."""

    def __init__(self):
        raise TypeError("AutoConfig is not instantiated: use AutoConfig.from_pretrained or AutoConfig.for_model")

    @staticmethod
    def for_model(model_type: str, **kwargs) -> PretrainedConfig:
        return config_class(model_type)(**kwargs)

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike | Source, **kwargs) -> PretrainedConfig:
        source = name_or_path if isinstance(name_or_path, Source) else Source(name_or_path, **pop_hub_options(kwargs))
        path = source.require("config.json")
        model_type = read_config_dict(path).get("model_type")
        if not model_type:
            raise ValueError(f"{path} has no 'model_type'; pretrained supports: {', '.join(sorted(CONFIGS))}. "
                             f"Load it with the architecture's class, e.g. BertConfig.from_pretrained")
        if not isinstance(model_type, str) or model_type not in CONFIGS:
            raise ValueError(f"{path} has model_type {model_type!r}, which pretrained does not support; "
                             f"supported: {', '.join(sorted(CONFIGS))}")
        return config_class(model_type).from_pretrained(source, **kwargs)


class _AutoModel:
    """Base of the AutoModel* classes: `task` names the table to pick the class from."""

    task = "AutoModel"

    def __init__(self):
        raise TypeError(f"{type(self).__name__} is not instantiated: use {type(self).__name__}.from_pretrained "
                        f"or .from_config")

    @classmethod
    def from_config(cls, config: PretrainedConfig):
        """A model with random weights for `config`."""
        return model_class(cls.task, config.model_type)(config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *,
                        config: PretrainedConfig | None = None, **kwargs: Any):
        """Load the checkpoint with the class its config's model_type names for this task.

        Takes the same arguments as PreTrainedModel.from_pretrained."""
        # One Source for config and weights: a Hub id is resolved to a commit once per load.
        source = pretrained_model_name_or_path if isinstance(pretrained_model_name_or_path, Source) \
            else Source(pretrained_model_name_or_path, **pop_hub_options(kwargs))
        if config is None:
            config = AutoConfig.from_pretrained(source)
        klass = model_class(cls.task, config.model_type)
        return klass.from_pretrained(source, config=config, **kwargs)


def _auto(task: str, doc: str) -> type:
    return type(task, (_AutoModel,), {"task": task, "__doc__": doc, "__module__": __name__})


AutoModel = _auto("AutoModel", "The base model (no head) of any supported architecture.")
AutoModelForSequenceClassification = _auto("AutoModelForSequenceClassification", "A sequence classifier.")
AutoModelForMaskedLM = _auto("AutoModelForMaskedLM", "A masked language model.")
AutoModelForTokenClassification = _auto("AutoModelForTokenClassification", "A token classifier.")
AutoModelForQuestionAnswering = _auto("AutoModelForQuestionAnswering", "An extractive question-answering model.")
AutoModelForCausalLM = _auto("AutoModelForCausalLM", "A causal (left-to-right) language model.")
AutoModelForSeq2SeqLM = _auto("AutoModelForSeq2SeqLM", "An encoder-decoder language model.")
