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
    "LlamaConfig": "models.llama_config", "LlamaModel": "models.llama", "LlamaForCausalLM": "models.llama",
    "LlamaForSequenceClassification": "models.llama",
    "MistralConfig": "models.mistral_config", "MistralModel": "models.mistral", "MistralForCausalLM": "models.mistral",
    "MistralForSequenceClassification": "models.mistral",
    "Qwen2Config": "models.qwen2_config", "Qwen2Model": "models.qwen2", "Qwen2ForCausalLM": "models.qwen2",
    "Qwen2ForSequenceClassification": "models.qwen2",
    "Qwen3Config": "models.qwen3_config", "Qwen3Model": "models.qwen3", "Qwen3ForCausalLM": "models.qwen3",
    "Qwen3ForSequenceClassification": "models.qwen3",
    "DistilBertConfig": "models.distilbert_config", "DistilBertModel": "models.distilbert",
    "DistilBertForMaskedLM": "models.distilbert", "DistilBertForSequenceClassification": "models.distilbert",
    "DistilBertForTokenClassification": "models.distilbert", "DistilBertForQuestionAnswering": "models.distilbert",
    "MPNetConfig": "models.mpnet_config", "MPNetModel": "models.mpnet", "MPNetForMaskedLM": "models.mpnet",
    "MPNetForSequenceClassification": "models.mpnet", "MPNetForTokenClassification": "models.mpnet",
    "MPNetForQuestionAnswering": "models.mpnet",
    "ModernBertConfig": "models.modernbert_config", "ModernBertModel": "models.modernbert",
    "ModernBertForMaskedLM": "models.modernbert", "ModernBertForSequenceClassification": "models.modernbert",
    "ModernBertForTokenClassification": "models.modernbert", "ModernBertForQuestionAnswering": "models.modernbert",
    "RobertaConfig": "models.roberta_config", "RobertaModel": "models.roberta",
    "RobertaForMaskedLM": "models.roberta", "RobertaForSequenceClassification": "models.roberta",
    "RobertaForTokenClassification": "models.roberta", "RobertaForQuestionAnswering": "models.roberta",
    "XLMRobertaConfig": "models.roberta_config", "XLMRobertaModel": "models.roberta",
    "XLMRobertaForMaskedLM": "models.roberta", "XLMRobertaForSequenceClassification": "models.roberta",
    "XLMRobertaForTokenClassification": "models.roberta", "XLMRobertaForQuestionAnswering": "models.roberta",
    "CamembertConfig": "models.roberta_config", "CamembertModel": "models.roberta",
    "CamembertForMaskedLM": "models.roberta", "CamembertForSequenceClassification": "models.roberta",
    "CamembertForTokenClassification": "models.roberta", "CamembertForQuestionAnswering": "models.roberta",
    "GenerationConfig": "generation", "GenerationMixin": "generation", "TextStreamer": "generation",
    "Tokenizer": "tokenization", "BatchEncoding": "tokenization",
    "ChatTemplateError": "tokenization", "ChatSession": "chat",
    "KVCache": "layers",
    "HubError": "hub", "RepoNotFoundError": "hub", "RevisionNotFoundError": "hub", "GatedRepoError": "hub",
    "NotCachedError": "hub", "MissingFileError": "hub",
    "SentenceTransformer": "sentence", "CrossEncoder": "sentence",
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
