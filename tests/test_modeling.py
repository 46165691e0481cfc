"""PreTrainedModel: random init, the from_pretrained pipeline (meta build, keys, dtype, reports) and save_pretrained."""
from __future__ import annotations

import json
import logging
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from pretrained import weights
from pretrained.configuration import ConfigError
from pretrained.hub import MissingFileError
from pretrained.models import bert as bert_module
from pretrained.modeling import ShapeMismatchError, build_on_meta, normalise_keys, resolve_dtype
from pretrained.models.bert import (BertConfig, BertForMaskedLM, BertForQuestionAnswering,
                                    BertForSequenceClassification, BertForTokenClassification, BertModel)
from pretrained.weights import CheckpointError

from test_weights import in_mapping, listing, mapped_ranges

SMALL = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
             max_position_embeddings=24)


def hf_state(folder: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(folder, "model.safetensors"))


def assert_loaded(model, state: dict, prefix: str = "") -> None:
    """Every tensor of `state` is in `model` under `prefix + key`, with equal values."""
    ours = model.state_dict()
    for key, tensor in state.items():
        assert torch.equal(ours[prefix + key], tensor), key


# -- random init -----------------------------------------------------------------------------------------------
def test_random_init_like_transformers():
    config = BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, initializer_range=0.05, pad_token_id=3)
    torch.manual_seed(0)
    model = BertForMaskedLM(config)
    for name, p in model.named_parameters():
        if "LayerNorm" in name:
            assert torch.all(p == (1.0 if name.endswith("weight") else 0.0)), name
        elif name.endswith("bias"):
            assert torch.all(p == 0), name
        else:  # normal(0, initializer_range)
            assert abs(p.std().item() - 0.05) < 0.05 * 0.15 and abs(p.mean().item()) < 0.01, name
    word = model.bert.embeddings.word_embeddings.weight
    assert torch.all(word[3] == 0) and torch.all(word[[0, 1, 2, 4]] != 0)
    assert abs(word.std().item() - 0.05) < 0.05 * 0.02  # 32,000 samples: within 2%
    assert torch.all(model.cls.predictions.bias == 0)
    assert model.training  # a fresh model is in training mode, as torch makes it


def test_random_init_is_reproducible_under_manual_seed():
    config = BertConfig(**SMALL)
    torch.manual_seed(1)
    a = BertForSequenceClassification(config).state_dict()
    torch.manual_seed(1)
    b = BertForSequenceClassification(config).state_dict()
    torch.manual_seed(2)
    c = BertForSequenceClassification(config).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["bert.encoder.layer.0.attention.self.query.weight"],
                           c["bert.encoder.layer.0.attention.self.query.weight"])


def test_init_statistics_match_transformers():
    import transformers

    torch.manual_seed(0)
    theirs = transformers.BertForMaskedLM(transformers.BertConfig(**SMALL))
    ours = BertForMaskedLM.from_config(BertConfig(**SMALL))
    t, o = theirs.state_dict(), ours.state_dict()
    assert set(o) <= set(t)  # same names (transformers also lists its non-persistent buffers)
    for key in o:
        assert o[key].shape == t[key].shape, key
        if t[key].float().std() == 0:  # constant inits (biases, LayerNorm) are the same constants
            assert torch.equal(o[key], t[key]), key
        else:  # random ones have the same spread
            assert abs(o[key].std().item() / t[key].std().item() - 1) < 0.25, key
    assert ours.num_parameters() == theirs.num_parameters()


def test_from_config_and_tied_weights():
    model = BertForMaskedLM(BertConfig(**SMALL))
    predictions = model.cls.predictions
    assert predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert predictions.decoder.bias is predictions.bias
    half = model.half()
    assert half.cls.predictions.decoder.weight is half.bert.embeddings.word_embeddings.weight
    untied = BertForMaskedLM(BertConfig(**SMALL, tie_word_embeddings=False))
    assert untied.cls.predictions.decoder.weight is not untied.bert.embeddings.word_embeddings.weight
    assert untied.cls.predictions.decoder.bias is untied.cls.predictions.bias  # the bias is always one tensor


def test_wrong_config_class():
    with pytest.raises(TypeError, match="BertConfig"):
        BertModel(object())


# -- the from_pretrained pipeline ------------------------------------------------------------------------------
def test_build_on_meta_allocates_nothing():
    model = build_on_meta(BertForMaskedLM, BertConfig(**SMALL))
    assert all(t.is_meta for t in model.state_dict().values())


@pytest.fixture
def init_calls(monkeypatch):
    """Every random-init call on a tensor with real storage during the test: (method, shape)."""
    calls = []
    for method in ("normal_", "uniform_", "zero_", "fill_"):
        original = getattr(torch.Tensor, method)

        def record(self, *args, _original=original, _method=method, **kwargs):
            if not self.is_meta:
                calls.append((_method, tuple(self.shape)))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, record)
    return calls


def test_loading_a_complete_checkpoint_initialises_nothing(hf_checkpoint, init_calls):
    folder = hf_checkpoint("BertForMaskedLM")
    init_calls.clear()
    model = BertForMaskedLM.from_pretrained(folder)
    assert init_calls == []  # the structure was built on the meta device: no random init paid for
    assert_loaded(model, hf_state(folder))


def test_only_missing_weights_are_initialised(hf_checkpoint, init_calls, caplog):
    folder = hf_checkpoint("BertModel")
    init_calls.clear()
    with caplog.at_level(logging.WARNING, logger="pretrained"):
        model = BertForSequenceClassification.from_pretrained(folder, num_labels=3)
    assert sorted(init_calls) == [("normal_", (3, 32)), ("zero_", (3,))]
    assert "classifier.weight" in caplog.text and "classifier.bias" in caplog.text
    assert "newly initialised" in caplog.text and "bert." not in caplog.text.split("initialised:")[1]
    assert_loaded(model, hf_state(folder), prefix="bert.")
    assert model.classifier.weight.shape == (3, 32) and torch.all(model.classifier.bias == 0)


def test_parameters_stay_views_of_the_safetensors_file(minilm_dir):
    model = BertModel.from_pretrained(minilm_dir)
    ranges = mapped_ranges(os.path.join(minilm_dir, "model.safetensors"))
    assert ranges
    params = list(model.parameters())
    assert len(params) == 103 and all(in_mapping(p, ranges) for p in params)


def test_from_pretrained_returns_eval_mode_and_records_its_source(hf_checkpoint):
    folder = hf_checkpoint("BertForSequenceClassification")
    model = BertForSequenceClassification.from_pretrained(folder)
    assert not model.training and not any(m.training for m in model.modules())
    assert model.config.name_or_path == folder


@pytest.mark.parametrize("arch", ["BertForSequenceClassification", "BertForMaskedLM",
                                  "BertForTokenClassification", "BertForQuestionAnswering"])
def test_base_model_loads_from_a_head_checkpoint_and_back(hf_checkpoint, tmp_path, arch, caplog):
    folder = hf_checkpoint(arch)
    state = hf_state(folder)
    with caplog.at_level(logging.INFO, logger="pretrained"):
        base = BertModel.from_pretrained(folder)
    assert_loaded(base, {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")})
    head_keys = [k for k in state if not k.startswith("bert.")]
    assert all(k in caplog.text for k in head_keys)  # reported as not used
    base.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert not any(k.startswith("bert.") for k in saved)
    head = getattr(bert_module, arch).from_pretrained(tmp_path)
    head_state = head.state_dict()
    # a head without a pooler drops the saved pooler (declared in _keys_to_ignore_on_load_unexpected)
    assert {k for k in saved if f"bert.{k}" not in head_state} <= {"pooler.dense.weight", "pooler.dense.bias"}
    assert_loaded(head, {k: v for k, v in saved.items() if f"bert.{k}" in head_state}, prefix="bert.")


def test_legacy_gamma_beta_and_old_buffers(hf_checkpoint, tmp_path, caplog):
    folder = hf_checkpoint("BertForMaskedLM")
    state = hf_state(folder)
    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in state.items()}
    assert sum("gamma" in k for k in legacy) == 6
    # what transformers 4.x saved: tied decoder weight and bias, and the position_ids buffer
    legacy["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    legacy["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    legacy["bert.embeddings.position_ids"] = torch.arange(24)[None]
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(open(os.path.join(folder, "config.json")).read())
    with caplog.at_level(logging.INFO, logger="pretrained"):
        model = BertForMaskedLM.from_pretrained(tmp_path)
    assert caplog.text == ""  # nothing missing, nothing unexpected
    assert_loaded(model, state)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_tied_target_alone_loads_into_its_source(hf_checkpoint, tmp_path):
    state = hf_state(hf_checkpoint("BertForMaskedLM"))
    word = state.pop("bert.embeddings.word_embeddings.weight")
    state["cls.predictions.decoder.weight"] = word
    model = BertForMaskedLM(BertConfig(**SMALL))
    out = normalise_keys(model, state, {})
    assert torch.equal(out["bert.embeddings.word_embeddings.weight"], word)
    assert "cls.predictions.decoder.weight" not in out


def test_missing_and_unexpected_keys_are_logged(hf_checkpoint, tmp_path, caplog):
    folder = hf_checkpoint("BertForTokenClassification")
    state = hf_state(folder)
    del state["bert.encoder.layer.1.output.dense.bias"]
    state["bert.encoder.layer.1.extra.weight"] = torch.zeros(2)
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(open(os.path.join(folder, "config.json")).read())
    with caplog.at_level(logging.WARNING, logger="pretrained"):
        model = BertForTokenClassification.from_pretrained(tmp_path)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "bert.encoder.layer.1.extra.weight" in caplog.text and "were not used" in caplog.text
    assert "bert.encoder.layer.1.output.dense.bias" in caplog.text and "newly initialised" in caplog.text
    assert torch.all(model.bert.encoder.layer[1].output.dense.bias == 0)


def test_minilm_loads_without_warnings(minilm_dir, caplog):
    with caplog.at_level(logging.INFO, logger="pretrained"):
        model = BertModel.from_pretrained(minilm_dir)
    assert caplog.text == ""  # the old embeddings.position_ids buffer is dropped silently
    assert "embeddings.position_ids" not in model.state_dict()


def test_shape_mismatch_names_key_and_shapes(hf_checkpoint, tmp_path):
    folder = hf_checkpoint("BertForSequenceClassification")
    with pytest.raises(ShapeMismatchError) as info:
        BertForSequenceClassification.from_pretrained(folder, num_labels=5)
    message = str(info.value)
    assert "classifier.bias" in message and "(2,)" in message and "(5,)" in message
    assert "model.safetensors" in message and "ignore_mismatched_sizes" in message

    state = hf_state(folder)
    state["bert.encoder.layer.1.attention.self.query.weight"] = torch.zeros(32, 31)
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(open(os.path.join(folder, "config.json")).read())
    with pytest.raises(ShapeMismatchError) as info:
        BertForSequenceClassification.from_pretrained(tmp_path)
    message = str(info.value)
    assert "'bert.encoder.layer.1.attention.self.query.weight'" in message
    assert "(32, 31)" in message and "(32, 32)" in message and str(tmp_path / "model.safetensors") in message
    assert isinstance(info.value, ValueError)


def test_integer_tensor_where_a_weight_belongs_is_named(hf_checkpoint, tmp_path):
    folder = hf_checkpoint("BertModel")
    state = hf_state(folder)
    state["encoder.layer.0.output.dense.bias"] = torch.zeros(32, dtype=torch.int64)
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(open(os.path.join(folder, "config.json")).read())
    with pytest.raises(ShapeMismatchError, match=r"'encoder.layer.0.output.dense.bias'.*torch.int64.*floating-point"):
        BertModel.from_pretrained(tmp_path)


def test_ignore_mismatched_sizes_reinitialises(hf_checkpoint, caplog):
    folder = hf_checkpoint("BertForSequenceClassification")
    with caplog.at_level(logging.WARNING, logger="pretrained"):
        model = BertForSequenceClassification.from_pretrained(folder, num_labels=5, ignore_mismatched_sizes=True)
    assert model.classifier.weight.shape == (5, 32) and torch.all(model.classifier.bias == 0)
    assert 0.005 < model.classifier.weight.std().item() < 0.05
    assert "classifier.weight" in caplog.text and "(2, 32)" in caplog.text and "(5, 32)" in caplog.text
    assert "not in the checkpoint" not in caplog.text  # reported as mismatched, not as missing
    assert model.config.num_labels == 5
    assert_loaded(model, {k: v for k, v in hf_state(folder).items() if not k.startswith("classifier.")})


def test_config_overrides_and_given_config(hf_checkpoint):
    folder = hf_checkpoint("BertModel")
    model = BertModel.from_pretrained(folder, hidden_dropout_prob=0.0, output_hidden_states=True)
    assert model.config.hidden_dropout_prob == 0.0 and model.config.output_hidden_states is True
    config = BertConfig.from_pretrained(folder, attention_probs_dropout_prob=0.0)
    model = BertModel.from_pretrained(folder, config=config, hidden_dropout_prob=0.25)
    assert model.config.attention_probs_dropout_prob == 0.0 and model.config.hidden_dropout_prob == 0.25
    assert config.hidden_dropout_prob == 0.1  # the given config is not changed
    with pytest.raises(TypeError, match="not_an_option"):
        BertModel.from_pretrained(folder, not_an_option=1)


def test_constructor_arguments_go_to_the_constructor(minilm_dir, caplog):
    with caplog.at_level(logging.INFO, logger="pretrained"):
        model = BertModel.from_pretrained(minilm_dir, add_pooling_layer=False, hidden_dropout_prob=0.0)
    assert model.pooler is None and model.config.hidden_dropout_prob == 0.0
    assert "pooler.dense.weight" in caplog.text  # the checkpoint's pooler is reported as not used
    assert not hasattr(model.config, "add_pooling_layer")


def test_dtype_argument(hf_checkpoint):
    folder = hf_checkpoint("BertForMaskedLM")
    state = hf_state(folder)
    for dtype in (torch.float16, "float16", "torch.float16"):
        model = BertForMaskedLM.from_pretrained(folder, dtype=dtype)
        assert {p.dtype for p in model.parameters()} == {torch.float16}
        assert model.config.dtype == "float16" and model.dtype == torch.float16
        assert torch.equal(model.bert.encoder.layer[0].output.dense.weight,
                           state["bert.encoder.layer.0.output.dense.weight"].half())
    model = BertForMaskedLM.from_pretrained(folder, torch_dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and model.config.dtype == "bfloat16"
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    with pytest.raises(ValueError, match="int8"):
        BertForMaskedLM.from_pretrained(folder, dtype="int8")
    with pytest.raises(ValueError, match="int64"):
        resolve_dtype(torch.int64, BertConfig(), {})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoints_keep_their_dtype(hf_checkpoint, dtype, tmp_path):
    import transformers

    folder = hf_checkpoint("BertForSequenceClassification", dtype=dtype)
    theirs = transformers.BertForSequenceClassification.from_pretrained(folder)
    for kwargs in ({}, {"dtype": "auto"}, {"torch_dtype": "auto"}):
        model = BertForSequenceClassification.from_pretrained(folder, **kwargs)
        assert model.dtype == theirs.dtype == dtype and model.config.dtype == str(dtype)[6:]
    assert_loaded(model, hf_state(folder))
    # missing weights are initialised in the same dtype
    head = BertForTokenClassification.from_pretrained(folder)
    assert head.classifier.weight.dtype == dtype
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == str(dtype)[6:]
    assert {t.dtype for t in load_file(tmp_path / "model.safetensors").values()} == {dtype}
    model32 = BertForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
    assert model32.dtype == torch.float32


@pytest.mark.parametrize("key, value, dtype", [("dtype", "float16", torch.float16),
                                                ("torch_dtype", "bfloat16", torch.bfloat16)])
def test_auto_dtype_follows_config_json_first(hf_checkpoint, tmp_path, key, value, dtype):
    """fp32 weights under a config.json that declares another dtype load in the declared one, as transformers does."""
    import transformers

    folder = hf_checkpoint("BertModel")
    shutil.copy(os.path.join(folder, "model.safetensors"), tmp_path)
    config = json.loads(open(os.path.join(folder, "config.json")).read())
    config.pop("dtype")
    (tmp_path / "config.json").write_text(json.dumps({**config, key: value}))
    assert BertModel.from_pretrained(tmp_path).dtype == dtype
    assert transformers.BertModel.from_pretrained(str(tmp_path)).dtype == dtype
    assert BertModel.from_pretrained(tmp_path, dtype=torch.float32).dtype == torch.float32
    (tmp_path / "config.json").write_text(json.dumps(config))  # no dtype declared: the weights'
    assert BertModel.from_pretrained(tmp_path).dtype == torch.float32


# -- save_pretrained -------------------------------------------------------------------------------------------
def test_save_pretrained_writes_config_and_tied_weights_once(tmp_path):
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(**SMALL, my_key="kept"))
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"] and config["model_type"] == "bert"
    assert config["dtype"] == "float32" and config["my_key"] == "kept"
    saved = load_file(tmp_path / "model.safetensors")
    assert "cls.predictions.decoder.weight" not in saved and "cls.predictions.decoder.bias" not in saved
    assert "bert.embeddings.word_embeddings.weight" in saved and "cls.predictions.bias" in saved
    assert_loaded(model, saved)
    again = BertForMaskedLM.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_untied_decoder_is_saved_and_loaded(tmp_path):
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(**SMALL, tie_word_embeddings=False))
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert "cls.predictions.decoder.weight" in saved and "cls.predictions.decoder.bias" not in saved
    again = BertForMaskedLM.from_pretrained(tmp_path)
    assert torch.equal(again.cls.predictions.decoder.weight, model.cls.predictions.decoder.weight)
    assert again.cls.predictions.decoder.weight is not again.bert.embeddings.word_embeddings.weight


@pytest.mark.parametrize("options", [{"safe_serialization": False}, {"max_shard_size": "20KB"},
                                     {"max_shard_size": "20KB", "safe_serialization": False}])
def test_save_formats_round_trip(tmp_path, options):
    torch.manual_seed(0)
    model = BertForQuestionAnswering(BertConfig(**SMALL))
    model.save_pretrained(tmp_path, **options)
    names = os.listdir(tmp_path)
    if options.get("safe_serialization") is False:
        assert not any(n.endswith(".safetensors") for n in names)
    if "max_shard_size" in options:
        assert sum(n.startswith(("model-", "pytorch_model-")) for n in names) > 2
    again = BertForQuestionAnswering.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_failed_save_leaves_the_previous_folder_intact(tmp_path, monkeypatch):
    torch.manual_seed(0)
    BertModel(BertConfig(**SMALL)).save_pretrained(tmp_path)
    before = listing(tmp_path)

    def failing_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 1000)
        raise OSError("disk full")

    monkeypatch.setattr(weights, "save_file", failing_save_file)
    torch.manual_seed(1)
    with pytest.raises(OSError, match="disk full"):
        BertModel(BertConfig(**SMALL, hidden_act="relu")).save_pretrained(tmp_path)
    assert listing(tmp_path) == before


def test_save_over_the_checkpoint_it_was_loaded_from(hf_checkpoint, tmp_path):
    """The parameters are views of the mapped file being replaced: the new file is written beside it first."""
    shutil.copytree(hf_checkpoint("BertForSequenceClassification"), tmp_path, dirs_exist_ok=True)
    model = BertForSequenceClassification.from_pretrained(tmp_path)
    with torch.no_grad():
        model.classifier.weight.add_(1.0)  # copy-on-write: the file itself is not changed by this
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for options in ({}, {"safe_serialization": False}, {"max_shard_size": "20KB"}):
        model.save_pretrained(tmp_path, **options)
        again = BertForSequenceClassification.from_pretrained(tmp_path)
        assert all(torch.equal(again.state_dict()[k], v) for k, v in expected.items())
        model = again


def test_save_into_a_file_raises(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError, match="f"):
        BertModel(BertConfig(**SMALL)).save_pretrained(tmp_path / "f")


# -- bad folders -----------------------------------------------------------------------------------------------
def test_folder_without_config_json(hf_checkpoint, tmp_path):
    save_file(hf_state(hf_checkpoint("BertModel")), tmp_path / "model.safetensors")
    with pytest.raises(MissingFileError, match="config.json") as info:
        BertModel.from_pretrained(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_folder_without_weights(tmp_path):
    BertConfig(**SMALL).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="has no weights") as info:
        BertModel.from_pretrained(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_not_a_folder(tmp_path):
    with pytest.raises(OSError, match="nowhere"):
        BertModel.from_pretrained(tmp_path / "nowhere")


def test_bad_config_values_are_named(tmp_path):
    BertConfig(**{**SMALL, "num_attention_heads": 5}).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="32.*5"):
        BertModel.from_pretrained(tmp_path)
    BertConfig(**{**SMALL, "hidden_act": "swishy"}).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="swishy"):
        BertModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "code_in_bin", "missing_shard"])
def test_bad_weight_files_through_from_pretrained(hf_checkpoint, tmp_path, damage):
    folder = hf_checkpoint("BertModel")
    shutil.copy(os.path.join(folder, "config.json"), tmp_path / "config.json")
    if damage == "truncated":
        data = open(os.path.join(folder, "model.safetensors"), "rb").read()
        (tmp_path / "model.safetensors").write_bytes(data[:-100])
        culprit = "model.safetensors"
    elif damage == "code_in_bin":
        class Payload:
            def __reduce__(self):
                return os.system, (f"touch {tmp_path / 'ran'}",)

        torch.save({**hf_state(folder), "x": Payload()}, tmp_path / "pytorch_model.bin")
        culprit = "pytorch_model.bin"
    else:
        BertModel.from_pretrained(folder).save_pretrained(tmp_path, max_shard_size="10KB")
        culprit = sorted(n for n in os.listdir(tmp_path) if n.endswith(".safetensors"))[1]
        os.remove(tmp_path / culprit)
    with pytest.raises(CheckpointError, match=culprit) as info:
        BertModel.from_pretrained(tmp_path)
    assert str(tmp_path) in str(info.value) and isinstance(info.value, OSError)
    assert not (tmp_path / "ran").exists()
