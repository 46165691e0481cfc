"""pretrained: load Hugging Face checkpoints into lean, readable PyTorch models.

Public names are resolved lazily: `import pretrained` imports neither torch nor any architecture; the first
use of a name imports the module that defines it.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module (relative to this package) that defines it
_LAZY = {
    "PretrainedConfig": "configuration", "PreTrainedConfig": "configuration", "ConfigError": "configuration",
    "PreTrainedModel": "modeling", "ShapeMismatchError": "modeling",
    "CheckpointError": "weights",
    "Source": "hub",
    "AutoConfig": "auto", "AutoModel": "auto", "AutoModelForSequenceClassification": "auto",
    "AutoModelForMaskedLM": "auto", "AutoModelForTokenClassification": "auto",
    "AutoModelForQuestionAnswering": "auto", "AutoModelForCausalLM": "auto", "AutoModelForSeq2SeqLM": "auto",
    "AutoTokenizer": "tokenization",
    "BertConfig": "models.bert_config", "BertModel": "models.bert", "BertForSequenceClassification": "models.bert",
    "BertForMaskedLM": "models.bert", "BertForTokenClassification": "models.bert",
    "BertForQuestionAnswering": "models.bert",
    "GPT2Config": "models.gpt2_config", "GPT2Model": "models.gpt2", "GPT2LMHeadModel": "models.gpt2",
    "GPT2ForSequenceClassification": "models.gpt2",
    "BartConfig": "models.bart_config", "BartModel": "models.bart", "BartForConditionalGeneration": "models.bart",
    "BartForSequenceClassification": "models.bart",
    "GenerationConfig": "generation", "GenerationMixin": "generation", "TextStreamer": "generation",
    "Tokenizer": "tokenization", "BatchEncoding": "tokenization",
    "KVCache": "layers",
    "HubError": "hub", "RepoNotFoundError": "hub", "RevisionNotFoundError": "hub", "GatedRepoError": "hub",
    "NotCachedError": "hub", "MissingFileError": "hub",
}
_ALIASES = {"PreTrainedConfig": "PretrainedConfig"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'pretrained' has no attribute {name!r}")
    module = importlib.import_module(f".{module_name}", __name__)
    value = getattr(module, _ALIASES.get(name, name))
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
