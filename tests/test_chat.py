"""Chat templates against transformers' apply_chat_template, and the `pretrained chat` command.

The templates are the published ones of Llama-3.1/3.2 Instruct, Qwen2.5-Instruct, Mistral-7B-Instruct v0.1 and
v0.3, and SmolLM2-Instruct (tests/fixtures/chat_templates, sources in SOURCES.md), each on a tokenizer in the
shape its checkpoints ship (tests/tokenizer_files.py). Every case renders the same conversation with ours and
with transformers and compares the text, the ids and the BatchEncoding exactly.
"""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

import tokenizer_files
from pretrained.tokenization import AutoTokenizer, ChatTemplateError

transformers = pytest.importorskip("transformers")
jinja2 = pytest.importorskip("jinja2")

SYSTEM = {"role": "system", "content": "You are a terse assistant. Answer in one line."}
TURNS = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
    {"role": "user", "content": "  And of Japan? Answer with naïve émojis 🗼 too.  "},
]
TOOL = {"type": "function", "function": {
    "name": "get_temperature", "description": "Get the temperature at a location.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string", "description": "A city."}},
                   "required": ["location"]}}}
TOOL_CALL = {"role": "assistant", "tool_calls": [{"type": "function", "function": {
    "name": "get_temperature", "arguments": {"location": "Paris"}}}]}
TOOL_RESULT = {"role": "tool", "content": "22.5", "name": "get_temperature"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    made = {
        "llama-3.1": tokenizer_files.byte_level_bpe(root / "llama31", "llama3", model_type="llama"),
        "qwen2.5": tokenizer_files.byte_level_bpe(root / "qwen25", "qwen2", model_type="qwen2"),
        "smollm2": tokenizer_files.byte_level_bpe(root / "smollm2", "smollm2", model_type="llama"),
        "mistral-v0.1": tokenizer_files.sentencepiece_bpe(
            root / "mistral01", model_type="mistral", legacy=True,
            chat_template=tokenizer_files.template("mistralai-Mistral-7B-Instruct-v0.1")),
        "mistral-v0.3": tokenizer_files.sentencepiece_bpe(
            root / "mistral03", legacy_normalizer=False, model_type="mistral", legacy=False,
            control_tokens=["[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                            "[TOOL_RESULTS]", "[/TOOL_RESULTS]"],
            chat_template=tokenizer_files.template("mistralai-Mistral-7B-Instruct-v0.3")),
    }
    # Llama-3.2: the template in chat_template.jinja (as transformers 5 saves it), not in the config.
    llama32 = root / "llama32"
    shutil.copytree(made["llama-3.1"], llama32)
    with open(llama32 / "tokenizer_config.json", encoding="utf-8") as f:
        config = json.load(f)
    del config["chat_template"]
    (llama32 / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (llama32 / "chat_template.jinja").write_text(tokenizer_files.template("meta-llama-Llama-3.2-3B-Instruct"),
                                                 encoding="utf-8")
    made["llama-3.2"] = str(llama32)
    return made


_LOADED = {}


def _load(folders, name):
    if name not in _LOADED:
        _LOADED[name] = (AutoTokenizer.from_pretrained(folders[name]),
                         transformers.AutoTokenizer.from_pretrained(folders[name]))
    return _LOADED[name]


def _plain(value):
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict) or hasattr(value, "keys"):
        return {key: _plain(value[key]) for key in value.keys()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def same(ours, theirs, conversation, **kwargs):
    """apply_chat_template gives the same text, ids and BatchEncoding (or both raise); returns the text."""
    try:
        text = theirs.apply_chat_template(conversation, tokenize=False, **kwargs)
    except jinja2.TemplateError as error:
        with pytest.raises(ChatTemplateError) as ours_error:
            ours.apply_chat_template(conversation, tokenize=False, **kwargs)
        assert str(error) in str(ours_error.value)
        return None
    assert ours.apply_chat_template(conversation, tokenize=False, **kwargs) == text
    for options in ({}, {"return_dict": False}, {"return_tensors": "pt"},
                    {"return_dict": False, "return_tensors": "pt"}):
        got = ours.apply_chat_template(conversation, **options, **kwargs)
        expected = theirs.apply_chat_template(conversation, **options, **kwargs)
        assert type(_plain(got)) is type(_plain(expected)), options
        assert _plain(got) == _plain(expected), options
    return text


CONVERSATIONS = {
    "one user turn": [TURNS[0]],
    "system prompt": [SYSTEM, TURNS[0]],
    "multi-turn": TURNS,
    "multi-turn with a system prompt": [SYSTEM, *TURNS],
}


@pytest.mark.parametrize("name", ["llama-3.1", "llama-3.2", "qwen2.5", "smollm2", "mistral-v0.1", "mistral-v0.3"])
@pytest.mark.parametrize("case", list(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_published_templates_render_as_in_transformers(folders, name, case, add_generation_prompt):
    ours, theirs = _load(folders, name)
    conversation = CONVERSATIONS[case]
    # Llama-3.2 writes today's date (strftime_now); pin it once, and let it run once on its own below.
    extra = {"date_string": "26 Nov 2026"} if name == "llama-3.2" else {}
    text = same(ours, theirs, conversation, add_generation_prompt=add_generation_prompt, **extra)
    if name == "mistral-v0.1" and conversation[0]["role"] == "system":
        assert text is None  # the template refuses system prompts, in both
        return
    assert text is not None and "capital of France?" in text
    assert ("Paris is the capital" in text) == case.startswith("multi-turn")


def test_texts_are_the_published_formats(folders):
    """Spot checks of what the templates write, independent of transformers."""
    assert _load(folders, "qwen2.5")[0].apply_chat_template([TURNS[0]], tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert _load(folders, "llama-3.1")[0].apply_chat_template([SYSTEM, TURNS[0]], tokenize=False) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
        "Today Date: 26 Jul 2024\n\nYou are a terse assistant. Answer in one line.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>")
    assert _load(folders, "mistral-v0.1")[0].apply_chat_template(TURNS[:2], tokenize=False) == (
        "<s>[INST] What is the capital of France? [/INST]Paris is the capital of France.</s> ")
    ours = _load(folders, "smollm2")[0]
    ids = ours.apply_chat_template([TURNS[0]], add_generation_prompt=True, return_dict=False)
    assert ids[0] == ours.convert_tokens_to_ids("<|im_start|>") and ours.decode(ids).endswith("assistant\n")


def test_strftime_now_writes_todays_date(folders):
    import datetime

    ours, theirs = _load(folders, "llama-3.2")
    text = same(ours, theirs, [TURNS[0]], add_generation_prompt=True)
    assert f"Today Date: {datetime.datetime.now().strftime('%d %b %Y')}" in text


def test_bad_role_sequences_raise_the_templates_own_message(folders):
    ours, theirs = _load(folders, "mistral-v0.1")
    for conversation, message in (
            ([TURNS[0], TURNS[0]], "Conversation roles must alternate user/assistant/user/assistant/..."),
            ([TURNS[1], TURNS[0]], "Conversation roles must alternate user/assistant/user/assistant/..."),
            ([SYSTEM, TURNS[0]], "Conversation roles must alternate user/assistant/user/assistant/...")):
        with pytest.raises(jinja2.TemplateError, match="Conversation roles must alternate"):
            theirs.apply_chat_template(conversation)
        with pytest.raises(ChatTemplateError) as error:
            ours.apply_chat_template(conversation)
        assert message in str(error.value) and folders["mistral-v0.1"] in str(error.value)
        assert isinstance(error.value, ValueError)
    ours, theirs = _load(folders, "llama-3.1")
    with pytest.raises(ChatTemplateError, match="This model only supports single tool-calls at once!"):
        ours.apply_chat_template([TURNS[0], {"role": "assistant", "tool_calls": TOOL_CALL["tool_calls"] * 2}])


@pytest.mark.parametrize("name", ["llama-3.1", "qwen2.5", "mistral-v0.3"])
def test_tools_and_tool_calls(folders, name):
    """Tool schemas through transformers' `tojson` (no HTML escaping, keys in order, `indent=`), tool calls,
    tool results."""
    ours, theirs = _load(folders, name)
    conversation = [TURNS[0], TOOL_CALL, TOOL_RESULT] if name != "mistral-v0.3" else [TURNS[0]]
    text = same(ours, theirs, [SYSTEM, *conversation] if name != "mistral-v0.3" else conversation,
                tools=[TOOL], add_generation_prompt=name != "mistral-v0.3")
    assert '"name": "get_temperature"' in text
    same(ours, theirs, [TURNS[0]], tools=[{**TOOL, "function": {**TOOL["function"], "description": "<b> & 'é'"}}])


def test_continue_final_message(folders):
    ours, theirs = _load(folders, "qwen2.5")
    prefill = [TURNS[0], {"role": "assistant", "content": "The capital is "}]
    text = same(ours, theirs, prefill, continue_final_message=True)
    assert text.endswith("<|im_start|>assistant\nThe capital is ")
    ours, theirs = _load(folders, "llama-3.1")  # trims the message: the trailing space goes too
    assert same(ours, theirs, prefill, continue_final_message=True).endswith("The capital is")
    with pytest.raises(ValueError, match="exclude each other"):
        ours.apply_chat_template(prefill, continue_final_message=True, add_generation_prompt=True)


def test_a_batch_of_conversations_with_padding(folders):
    for name in ("qwen2.5", "llama-3.1"):
        ours, theirs = _load(folders, name)
        batch = [[TURNS[0]], [SYSTEM, *TURNS]]
        if ours.pad_token is None:
            ours.pad_token = ours.eos_token
            theirs.pad_token = theirs.eos_token
        same(ours, theirs, batch, add_generation_prompt=True, padding=True)
        got = ours.apply_chat_template(batch, padding=True, return_tensors="pt")
        assert got["input_ids"].shape[0] == 2 and (got["attention_mask"][0] == 0).any()


def test_generation_blocks_give_the_assistant_mask(folders):
    template = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}{% if m['role'] == 'assistant' %}"
                "{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{% else %}"
                "{{ m['content'] + '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}")
    ours, theirs = _load(folders, "smollm2")
    for options in ({}, {"return_tensors": "pt"}):
        got = ours.apply_chat_template(TURNS, chat_template=template, return_assistant_tokens_mask=True, **options)
        expected = theirs.apply_chat_template(TURNS, chat_template=template, return_assistant_tokens_mask=True,
                                              **options)
        assert _plain(got) == _plain(expected)
    mask = got["assistant_masks"][0].tolist()
    assert ours.decode([i for i, m in zip(got["input_ids"][0].tolist(), mask) if m]) == (
        "Paris is the capital of France.<|im_end|>")


def test_templates_from_files_and_named_templates(folders, tmp_path):
    base = folders["smollm2"]
    shutil.copytree(base, tmp_path, dirs_exist_ok=True)
    with open(tmp_path / "tokenizer_config.json", encoding="utf-8") as f:
        config = json.load(f)
    config["chat_template"] = [{"name": "default", "template": "{{ messages[0]['content'] }}"},
                               {"name": "tool_use", "template": "TOOLS {{ tools | length }}"}]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    ours, theirs = AutoTokenizer.from_pretrained(tmp_path), transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert ours.chat_template == theirs.chat_template
    for kwargs in ({}, {"tools": [TOOL]}, {"chat_template": "tool_use", "tools": []}):
        assert ours.apply_chat_template(TURNS, tokenize=False, **kwargs) == theirs.apply_chat_template(
            TURNS, tokenize=False, **kwargs)
    # Files win over the config: chat_template.jinja and additional_chat_templates/NAME.jinja.
    (tmp_path / "chat_template.jinja").write_text("FILE {{ messages | length }}", encoding="utf-8")
    (tmp_path / "additional_chat_templates").mkdir()
    (tmp_path / "additional_chat_templates" / "short.jinja").write_text("SHORT", encoding="utf-8")
    ours, theirs = AutoTokenizer.from_pretrained(tmp_path), transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert ours.chat_template == theirs.chat_template == {"default": "FILE {{ messages | length }}",
                                                         "short": "SHORT"}
    assert ours.apply_chat_template(TURNS, tokenize=False) == "FILE 3"
    assert ours.apply_chat_template(TURNS, tokenize=False, chat_template="short") == "SHORT"
    # Saved as transformers 5 saves them, and read back by both.
    ours.save_pretrained(tmp_path / "saved")
    assert sorted(os.listdir(tmp_path / "saved" / "additional_chat_templates")) == ["short.jinja"]
    for reloaded in (AutoTokenizer, transformers.AutoTokenizer):
        assert reloaded.from_pretrained(tmp_path / "saved").chat_template == ours.chat_template
    ours.chat_template = {"short": "SHORT"}
    with pytest.raises(ValueError, match="none is the default"):
        ours.apply_chat_template(TURNS)


def test_sandbox_and_transformers_globals(folders):
    ours, theirs = _load(folders, "smollm2")
    good = ("{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}"
            "{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }} {{ dict(a=1) | tojson }} "
            "{{ dict.fromkeys(['x']) | tojson }}"
            " {{ bos_token }}|{{ eos_token }}|{{ pad_token }} {{ custom }} {{ messages[0] | tojson(indent=2) }}")
    assert ours.apply_chat_template(TURNS, chat_template=good, tokenize=False, custom="<&>") == \
        theirs.apply_chat_template(TURNS, chat_template=good, tokenize=False, custom="<&>")
    for bad in ("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}",
                "{% set ns = namespace() %}{% set ns._x = 1 %}{{ ns._x }}",
                "{{ messages.append(1) }}"):
        with pytest.raises(jinja2.exceptions.SecurityError):
            theirs.apply_chat_template(TURNS, chat_template=bad, tokenize=False)
        with pytest.raises(ChatTemplateError, match="SecurityError"):
            ours.apply_chat_template(TURNS, chat_template=bad, tokenize=False)


def test_messages_are_plain_data_for_the_template(folders):
    """None values are dropped (templates handle a missing key), objects become dicts or placeholders."""
    from dataclasses import dataclass

    @dataclass
    class Message:
        role: str
        content: object

    ours, theirs = _load(folders, "smollm2")
    conversation = [Message("user", "hi"), {"role": "assistant", "content": torch.ones(2), "name": None}]
    template = "{% for m in messages %}{{ m.role }}={{ m.content }} {{ m.name is defined }};{% endfor %}"
    assert ours.apply_chat_template(conversation, chat_template=template, tokenize=False) == \
        theirs.apply_chat_template(conversation, chat_template=template, tokenize=False) == \
        "user=hi False;assistant=<Tensor> False;"


# ---------------------------------------------------------------------------------------------- bad input

def test_messages_without_role_or_content(folders):
    ours, _ = _load(folders, "qwen2.5")
    with pytest.raises(ValueError, match=r"conversation\[1\] has no 'role'"):
        ours.apply_chat_template([TURNS[0], {"content": "hi"}])
    with pytest.raises(ValueError, match=r"conversation\[0\] \(role 'user'\) has no 'content'"):
        ours.apply_chat_template([{"role": "user"}])
    with pytest.raises(ValueError, match=r"conversation\[0\] \(role 'user'\) has no 'content'"):
        ours.apply_chat_template([{"role": "user", "content": None}])
    with pytest.raises(ValueError, match=r"conversation\[1\]\[0\] has no 'role'"):
        ours.apply_chat_template([[TURNS[0]], [{"text": "hi"}]])
    with pytest.raises(TypeError, match=r"conversation\[0\] must be a dict"):
        ours.apply_chat_template(["hello"])
    with pytest.raises(ValueError, match="non-empty list of messages"):
        ours.apply_chat_template([])


def test_templates_that_fail(folders):
    ours, theirs = _load(folders, "qwen2.5")
    with pytest.raises(ChatTemplateError, match=r"does not compile: .*endfor.* \(line 1\)"):
        ours.apply_chat_template(TURNS, chat_template="{% for m in messages %}{{ m.content }}")
    with pytest.raises(ChatTemplateError, match="UndefinedError: 'dict object' has no attribute 'missing'"):
        ours.apply_chat_template(TURNS, chat_template="{{ messages[0].missing + 'x' }}")
    with pytest.raises(ChatTemplateError, match=r"failed: only one system message, please"):
        ours.apply_chat_template(TURNS, chat_template="{{ raise_exception('only one system message, please') }}")
    with pytest.raises(TypeError, match="JSON schema"):
        ours.apply_chat_template(TURNS, tools=[print])
    no_template = AutoTokenizer.from_pretrained(folders["qwen2.5"], chat_template=None)
    with pytest.raises(ValueError, match="has no chat template"):
        no_template.apply_chat_template(TURNS)


def test_without_jinja2_the_error_names_the_extra(folders, monkeypatch):
    import sys

    from pretrained import tokenization

    ours, _ = _load(folders, "qwen2.5")
    tokenization._chat_environment.cache_clear()
    tokenization.compile_chat_template.cache_clear()
    monkeypatch.setitem(sys.modules, "jinja2", None)
    try:
        with pytest.raises(ImportError, match=r'pip install "pretrained\[chat\]"'):
            ours.apply_chat_template(TURNS)
    finally:
        tokenization._chat_environment.cache_clear()
        tokenization.compile_chat_template.cache_clear()
