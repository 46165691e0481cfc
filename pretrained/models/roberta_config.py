"""Configurations of RoBERTa and its two descendants with their own model_type, XLM-RoBERTa and CamemBERT,
importable without torch; re-exported from `models/roberta.py`.

Their fields are BERT's, with fairseq's special tokens (<s> 0, <pad> 1, </s> 2) as defaults.
"""
from __future__ import annotations

from typing import Optional

from .bert_config import BertConfig


class RobertaConfig(BertConfig):
    model_type = "roberta"

    vocab_size: int = 50265
    pad_token_id: Optional[int] = 1
    bos_token_id: Optional[int] = 0
    eos_token_id: Optional[int] = 2


class XLMRobertaConfig(RobertaConfig):
    model_type = "xlm-roberta"

    vocab_size: int = 30522


class CamembertConfig(RobertaConfig):
    model_type = "camembert"

    vocab_size: int = 30522
