"""Configs: transformers' field names and defaults, overrides, unknown keys, JSON in and out, v4 and v5 files."""
from __future__ import annotations

import copy
import json
import os
import re

import pytest
import transformers

from pretrained.configuration import ConfigError, PretrainedConfig
from pretrained.hub import MissingFileError
from pretrained.models.bert import BertConfig

# A config.json as transformers v4 wrote it for a fine-tuned classifier (hand-written: v4 is not installed).
V4_CONFIG = {
    "_name_or_path": "bert-base-uncased",
    "architectures": ["BertForSequenceClassification"],
    "attention_probs_dropout_prob": 0.1,
    "classifier_dropout": None,
    "gradient_checkpointing": False,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 32,
    "id2label": {"0": "NEGATIVE", "1": "NEUTRAL", "2": "POSITIVE"},
    "initializer_range": 0.02,
    "intermediate_size": 37,
    "label2id": {"NEGATIVE": 0, "NEUTRAL": 1, "POSITIVE": 2},
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 24,
    "model_type": "bert",
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "problem_type": "single_label_classification",
    "torch_dtype": "float16",
    "transformers_version": "4.38.2",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": 99,
}


def hf_json_without_version(hf_config) -> str:
    """transformers' to_json_string, minus the `transformers_version` key we do not invent."""
    text, n = re.subn(r'\n  "transformers_version": "[^"]*",', "", hf_config.to_json_string())
    assert n == 1
    return text


def write_json(folder, data, name="config.json") -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


# -- fields and defaults -----------------------------------------------------------------------------------------
def test_defaults_are_transformers_defaults():
    ours, theirs = BertConfig(), transformers.BertConfig()
    for name in BertConfig.field_defaults():
        assert getattr(ours, name) == getattr(theirs, name), name
    # every BERT field transformers has, we have, under the same name
    base = set(transformers.PreTrainedConfig().to_dict())
    assert set(theirs.to_dict()) - base <= set(BertConfig.field_defaults())
    assert (ours.layer_norm_eps, ours.vocab_size, ours.pad_token_id, ours.num_labels) == (1e-12, 30522, 0, 2)
    assert ours.model_type == "bert" and ours.problem_type is None and ours.tie_word_embeddings is True


def test_keyword_overrides_and_unknown_keys():
    config = BertConfig(hidden_size=64, num_attention_heads=4, layer_norm_eps=1e-5, my_extra={"a": [1, 2]})
    assert (config.hidden_size, config.num_attention_heads, config.layer_norm_eps) == (64, 4, 1e-5)
    assert config.num_hidden_layers == 12  # untouched default
    assert config.my_extra == {"a": [1, 2]}
    assert json.loads(config.to_json_string())["my_extra"] == {"a": [1, 2]}
    assert config.to_dict()["my_extra"] == {"a": [1, 2]}
    with pytest.raises(AttributeError, match="nope"):
        config.nope


def test_defaults_are_not_shared_between_instances():
    a, b = BertConfig(), BertConfig()
    a.id2label[5] = "X"
    assert 5 not in b.id2label and 5 not in BertConfig().id2label


@pytest.mark.parametrize("kwargs", [
    {},
    {"hidden_size": 48, "num_labels": 3, "problem_type": "regression", "foo": 1},
    {"num_labels": 12},  # 12 labels: "2" must sort before "10", as transformers writes them
    {"id2label": {0: "NEG", 1: "POS"}, "label2id": {"NEG": 0, "POS": 1}, "classifier_dropout": 0.3},
    {"tie_word_embeddings": False, "hidden_act": "gelu_new", "dtype": "bfloat16", "architectures": ["BertModel"]},
    {"torch_dtype": "float16", "problem_type": "multi_label_classification", "bos_token_id": 5},
])
def test_print_and_json_match_transformers(kwargs, capsys):
    ours, theirs = BertConfig(**copy.deepcopy(kwargs)), transformers.BertConfig(**copy.deepcopy(kwargs))
    expected = hf_json_without_version(theirs)
    assert ours.to_json_string() == expected
    assert repr(ours) == "BertConfig " + expected
    print(ours)
    assert capsys.readouterr().out == "BertConfig " + expected + "\n"
    # to_dict: the same keys and values (transformers adds its version and `_name_or_path`)
    theirs_dict = {k: v for k, v in theirs.to_dict().items() if k not in ("transformers_version", "_name_or_path")}
    assert ours.to_dict() == theirs_dict


def test_to_dict_keeps_integer_label_ids_and_is_a_copy():
    config = BertConfig(num_labels=3)
    d = config.to_dict()
    assert d["id2label"] == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"} and d["model_type"] == "bert"
    d["id2label"][0] = "changed"
    assert config.id2label[0] == "LABEL_0"
    assert json.loads(config.to_json_string(use_diff=False))["vocab_size"] == 30522


def test_from_dict_with_overrides():
    config = BertConfig.from_dict({"hidden_size": 64, "model_type": "bert", "extra": 1}, hidden_size=96)
    assert config.hidden_size == 96 and config.extra == 1
    assert isinstance(config, BertConfig)
    assert BertConfig.from_dict(config.to_dict()) == config


def test_num_labels():
    assert BertConfig(num_labels=4).id2label == {i: f"LABEL_{i}" for i in range(4)}
    assert BertConfig(num_labels=4).label2id == {f"LABEL_{i}": i for i in range(4)}
    config = BertConfig(id2label={"0": "a", "1": "b", "2": "c"})
    assert config.num_labels == 3 and config.id2label == {0: "a", 1: "b", 2: "c"}
    assert config.label2id == {"a": 0, "b": 1, "c": 2}
    config.num_labels = 3  # the same number keeps the names, as in transformers
    theirs = transformers.BertConfig(id2label={"0": "a", "1": "b", "2": "c"})
    theirs.num_labels = 3
    assert config.id2label == theirs.id2label == {0: "a", 1: "b", 2: "c"}
    config.num_labels = 5
    assert list(config.id2label) == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match="num_labels"):
        config.num_labels = 0


# -- files -----------------------------------------------------------------------------------------------------
def test_save_and_from_pretrained_with_overrides(tmp_path):
    config = BertConfig(hidden_size=48, num_attention_heads=3, num_labels=3, custom="kept")
    config.save_pretrained(tmp_path / "c")
    assert sorted(os.listdir(tmp_path / "c")) == ["config.json"]
    loaded = BertConfig.from_pretrained(tmp_path / "c")
    assert loaded == config and loaded.custom == "kept" and loaded.num_labels == 3
    assert loaded.name_or_path == str(tmp_path / "c")
    overridden = BertConfig.from_pretrained(str(tmp_path / "c"), hidden_dropout_prob=0.0, num_labels=5)
    assert overridden.hidden_dropout_prob == 0.0 and overridden.num_labels == 5 and overridden.hidden_size == 48
    config_only, unused = BertConfig.from_pretrained(tmp_path / "c", return_unused_kwargs=True, not_a_field=1)
    assert unused == {"not_a_field": 1} and not hasattr(config_only, "not_a_field")


def test_from_pretrained_with_the_path_of_the_json_file(tmp_path):
    path = write_json(tmp_path, V4_CONFIG, name="my_config.json")
    config = BertConfig.from_pretrained(path, vocab_size=120)
    assert config.hidden_size == 32 and config.vocab_size == 120 and config.name_or_path == path


def test_reads_transformers_v4_file(tmp_path):
    write_json(tmp_path, V4_CONFIG)
    config = BertConfig.from_pretrained(tmp_path)
    assert config.dtype == "float16"  # torch_dtype is v4's name for dtype
    assert config.id2label == {0: "NEGATIVE", 1: "NEUTRAL", 2: "POSITIVE"} and config.num_labels == 3
    assert config.label2id == {"NEGATIVE": 0, "NEUTRAL": 1, "POSITIVE": 2}
    assert config.architectures == ["BertForSequenceClassification"]
    assert config.position_embedding_type == "absolute" and config.gradient_checkpointing is False
    assert config.problem_type == "single_label_classification"
    assert (config.hidden_size, config.vocab_size) == (32, 99)
    # the same file through transformers v5 gives the same config.json (apart from the version it stamps)
    theirs = transformers.BertConfig.from_pretrained(str(tmp_path))
    ours_data, theirs_data = json.loads(config.to_json_string()), json.loads(theirs.to_json_string())
    assert ours_data.pop("transformers_version") == "4.38.2"  # kept from the file, not invented
    theirs_data.pop("transformers_version")
    assert ours_data == theirs_data


def test_v4_file_round_trips(tmp_path):
    write_json(tmp_path / "in", V4_CONFIG)
    BertConfig.from_pretrained(tmp_path / "in").save_pretrained(tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    # Every key and value kept. As transformers v5 does: v4's `torch_dtype` is written as `dtype`,
    # `_name_or_path` is dropped, and the BERT fields the old file lacked are written with their defaults.
    expected = {k: v for k, v in V4_CONFIG.items() if k not in ("_name_or_path", "torch_dtype")}
    expected.update(dtype="float16", add_cross_attention=False, bos_token_id=None, eos_token_id=None,
                    is_decoder=False, tie_word_embeddings=True)
    assert written == expected
    # what we wrote round-trips byte for byte from then on
    BertConfig.from_pretrained(tmp_path / "out").save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "config.json").read_bytes() == (tmp_path / "out" / "config.json").read_bytes()


def test_transformers_v5_file_round_trips_byte_for_byte(tmp_path):
    theirs = transformers.BertConfig(hidden_size=48, num_attention_heads=3, num_labels=12, problem_type="regression",
                                     dtype="bfloat16", architectures=["BertForSequenceClassification"], custom=[1, 2])
    theirs.save_pretrained(tmp_path / "v5")
    original = (tmp_path / "v5" / "config.json").read_bytes()
    assert b'"dtype": "bfloat16"' in original and b"transformers_version" in original

    config = BertConfig.from_pretrained(tmp_path / "v5")
    assert config.dtype == "bfloat16" and config.num_labels == 12 and config.custom == [1, 2]
    config.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "config.json").read_bytes() == original
    # and what we write, transformers reads back to the same config
    back = transformers.BertConfig.from_pretrained(str(tmp_path / "again"))
    assert back.to_dict() == {**theirs.to_dict(), "_name_or_path": back._name_or_path}


def test_our_file_has_no_invented_version(tmp_path):
    BertConfig().save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert "transformers_version" not in data and data["model_type"] == "bert"


def test_minilm_config(minilm_dir):
    config = BertConfig.from_pretrained(minilm_dir)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (384, 6, 12)
    assert config.architectures == ["BertModel"] and config.gradient_checkpointing is False
    assert config.transformers_version == "4.8.2"
    theirs = transformers.BertConfig.from_pretrained(minilm_dir)
    without_version = re.compile(r'\n  "transformers_version": "[^"]*",')
    assert without_version.sub("", repr(config)) == without_version.sub("", repr(theirs))


def test_save_pretrained_into_a_file_raises(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="file"):
        BertConfig().save_pretrained(tmp_path / "file")


# -- bad input -------------------------------------------------------------------------------------------------
def test_invalid_json_names_the_file(tmp_path):
    path = write_json(tmp_path, '{"hidden_size": 32,')
    with pytest.raises(ConfigError, match="not valid JSON") as info:
        BertConfig.from_pretrained(tmp_path)
    assert path in str(info.value)


def test_json_list_names_the_file(tmp_path):
    path = write_json(tmp_path, [1, 2])
    with pytest.raises(ConfigError, match="JSON object, found list") as info:
        BertConfig.from_pretrained(tmp_path)
    assert path in str(info.value)


def test_non_integer_label_id_names_file_key_and_value(tmp_path):
    path = write_json(tmp_path, {**V4_CONFIG, "id2label": {"0": "a", "one": "b"}})
    with pytest.raises(ConfigError, match="id2label") as info:
        BertConfig.from_pretrained(tmp_path)
    assert "'one'" in str(info.value) and path in str(info.value)
    with pytest.raises(ConfigError, match="id2label.*'x'"):
        BertConfig(id2label={"x": "a"})


def test_folder_without_config_json(tmp_path):
    with pytest.raises(MissingFileError, match="config.json") as info:
        BertConfig.from_pretrained(tmp_path)
    assert isinstance(info.value, FileNotFoundError) and str(tmp_path) in str(info.value)


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="problem_type='classify'"):
        BertConfig(problem_type="classify")
    with pytest.raises(ConfigError, match="dtype='int8'"):
        BertConfig(dtype="int8")
    assert issubclass(ConfigError, ValueError)


def test_config_of_another_model_type_warns(tmp_path, caplog):
    write_json(tmp_path, {**V4_CONFIG, "model_type": "roberta"})
    with caplog.at_level("WARNING"):
        BertConfig.from_pretrained(tmp_path)
    assert "roberta" in caplog.text


def test_base_class_is_exported():
    import pretrained

    assert pretrained.PretrainedConfig is PretrainedConfig is pretrained.PreTrainedConfig
    assert issubclass(BertConfig, PretrainedConfig)
