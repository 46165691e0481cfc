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


# ---------------------------------------------------------------------------------------------- pretrained chat

import select  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from conftest import perturb  # noqa: E402
from pretrained import cli  # noqa: E402
from pretrained.chat import ChatSession, repl  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _chat_checkpoint(folder, arch: str, seed: int = 0) -> str:
    """A tiny causal LM built and saved by transformers, with a chat tokenizer in its checkpoints' shape: GPT-2
    and Qwen2 with Qwen2.5's tokenizer and template, Llama with Llama-3.1's (and its list of eos ids). Weights
    are scaled up so that the replies depend on the context; the special tokens' output rows copy an ordinary
    token's, so that greedy decoding (which takes the lowest id of a tie) never ends a reply early."""
    kind = "llama3" if arch == "llama" else "qwen2"
    tokenizer_files.byte_level_bpe(folder, kind, model_type=arch)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    special = sorted(tok.added_tokens_decoder)
    end = tok.convert_tokens_to_ids("<|end_of_text|>" if arch == "llama" else "<|endoftext|>")
    torch.manual_seed(seed)
    if arch == "gpt2":
        config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=len(tok), n_positions=1024,
                                         bos_token_id=end, eos_token_id=end, tie_word_embeddings=False)
    else:
        config = getattr(transformers, "LlamaConfig" if arch == "llama" else "Qwen2Config")(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False, bos_token_id=end,
            eos_token_id=end)
    model = transformers.AutoModelForCausalLM.from_config(config)
    perturb(model)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head.mul_(25)
        if arch == "gpt2":
            model.get_input_embeddings().weight.mul_(10)
            model.transformer.wpe.weight.mul_(10)
        for name, weight in model.named_parameters():  # strong attention: earlier turns weigh on the reply
            if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")):
                weight.mul_(2)
        for token_id in special:
            head[token_id] = head[5]
    if arch == "llama":
        model.generation_config.eos_token_id = [end, tok.convert_tokens_to_ids("<|eot_id|>")]
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def chat_dirs(tmp_path_factory):
    made = {}

    def get(arch):
        if arch not in made:
            made[arch] = _chat_checkpoint(tmp_path_factory.mktemp(f"chat-{arch}"), arch)
        return made[arch]
    return get


@pytest.fixture(scope="module")
def chat_dir(chat_dirs):
    return chat_dirs("gpt2")


def _reference(folder):
    """transformers' greedy reply to a conversation, through its apply_chat_template and generate."""
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    eos = model.generation_config.eos_token_id
    stop = (list(eos) if isinstance(eos, list) else [eos]) + [tok.eos_token_id]

    def reply(messages, max_new_tokens=8, prefixes=False):
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=False)
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop,
                                 pad_token_id=stop[0])[0, ids.shape[1]:]
        if prefixes:  # the text after each new token
            return [tok.decode(out[:n], skip_special_tokens=True) for n in range(1, len(out) + 1)]
        return tok.decode(out, skip_special_tokens=True)

    reply.raw = lambda text, max_new_tokens=8: tok.decode(model.generate(
        tok(text, return_tensors="pt").input_ids, max_new_tokens=max_new_tokens, do_sample=False,
        pad_token_id=stop[0])[0], skip_special_tokens=True)
    return reply


@pytest.fixture(scope="module")
def reference(chat_dir):
    return _reference(chat_dir)


def _chat(folder, *args, stdin: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pretrained.cli", "chat", folder, *args], input=stdin, text=True,
                          encoding="utf-8", capture_output=True, cwd=ROOT, env=env, timeout=120)


def _replies(stdout: str) -> list[str]:
    """What followed each `>>> ` prompt, without the newline that ends a reply."""
    return [chunk.removesuffix("\n") for chunk in stdout.split(">>> ")[1:]]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_chat_keeps_the_history_across_turns(chat_dirs, arch):
    """Turn 2 is answered with turn 1 in the prompt; /reset starts over (the system prompt stays)."""
    chat_dir = chat_dirs(arch)
    reference = _reference(chat_dir)
    run = _chat(chat_dir, "--system", "Be brief.", "--max-new-tokens", "8",
                stdin="Hello there\nWhat is the capital of France?\n/reset\nWhat is the capital of France?\n")
    assert run.returncode == 0, run.stderr
    assert {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[arch] in \
        run.stdout.split(">>> ")[0]
    first, second, reset, third, end = _replies(run.stdout)
    system = {"role": "system", "content": "Be brief."}
    turn1 = [system, {"role": "user", "content": "Hello there"}]
    assert first == reference(turn1)
    turn2 = turn1 + [{"role": "assistant", "content": first},
                     {"role": "user", "content": "What is the capital of France?"}]
    assert second == reference(turn2)
    alone = [system, {"role": "user", "content": "What is the capital of France?"}]
    assert second != reference(alone)  # the history changed the reply: the test can tell
    assert reset == "(conversation forgotten)"
    assert third == reference(alone)
    assert end == ""  # the end of input ends the session cleanly


def test_ctrl_c_stops_a_reply_and_keeps_the_session(chat_dir, reference):
    """SIGINT while a long reply streams: the reply stops, the part written joins the history, the next
    message is answered with it, and /exit ends the session with status 0."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pretrained.cli", "chat", chat_dir, "--max-new-tokens", "300"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    try:
        proc.stdin.write("Tell me a long story\n".encode())
        proc.stdin.flush()
        seen, deadline = b"", time.time() + 60
        while seen.count(b">>> ") < 1 or len(seen.split(b">>> ", 1)[1]) < 3:  # the reply has started
            assert time.time() < deadline and proc.poll() is None, seen
            if select.select([proc.stdout], [], [], 0.5)[0]:
                seen += os.read(proc.stdout.fileno(), 4096)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate("Go on\n/exit\n".encode(), timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()
    story, next_reply, *_ = _replies((seen + out).decode("utf-8"))
    story, rest = story.split("\n(stopped)")
    assert rest == ""
    # What was written is the start of the uninterrupted reply, cut before its end.
    full = reference([{"role": "user", "content": "Tell me a long story"}], 300, prefixes=True)
    assert story in full[:-1]
    history = [{"role": "user", "content": "Tell me a long story"}, {"role": "assistant", "content": story},
               {"role": "user", "content": "Go on"}]
    assert next_reply == reference(history, 300)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_run_uses_the_chat_template(chat_dirs, arch, capsys):
    chat_dir = chat_dirs(arch)
    reference = _reference(chat_dir)
    assert cli.main(["run", chat_dir, "Hello there", "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "chat template applied" in out
    assert out.rstrip("\n").split("\n\n", 1)[1] == reference([{"role": "user", "content": "Hello there"}])
    assert cli.main(["run", chat_dir, "Hello there", "--max-new-tokens", "8", "--raw"]) == 0
    out = capsys.readouterr().out
    assert "chat template" not in out
    assert out.rstrip("\n").split("\n\n", 1)[1] == reference.raw("Hello there")


def test_chat_needs_a_chat_template(chat_dir, tmp_path, capsys):
    shutil.copytree(chat_dir, tmp_path, dirs_exist_ok=True)
    with open(tmp_path / "tokenizer_config.json", encoding="utf-8") as f:
        config = json.load(f)
    del config["chat_template"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    assert cli.main(["chat", str(tmp_path)]) == 1
    assert "has no chat template" in capsys.readouterr().err
    assert cli.main(["chat", chat_dir, "--num-beams", "2"]) == 1
    assert "beam search" in capsys.readouterr().err


def test_session_drops_the_oldest_turns_to_fit_and_ctrl_c_at_the_prompt(chat_dir):
    """In-process: a conversation past the model's positions loses its oldest turns (with a note); Ctrl-C at
    the prompt, an empty line and /help do not end the session; commands are not sent as messages."""
    import io

    tok = AutoTokenizer.from_pretrained(chat_dir)
    from pretrained import AutoModelForCausalLM

    out = io.StringIO()
    session = ChatSession(AutoModelForCausalLM.from_pretrained(chat_dir), tok, options={"max_new_tokens": 6},
                          out=out)
    lines = iter(["first message", KeyboardInterrupt, "", "/help", "second message", "third message", "/bye"])

    def read(prompt):
        out.write(prompt)
        line = next(lines)
        if line is KeyboardInterrupt:
            raise KeyboardInterrupt
        return line

    session.max_positions = len(session.prompt_ids([{"role": "user", "content": "first message"}])[0]) + 30
    with torch.inference_mode():
        repl(session, read=read, out=out)
    text = out.getvalue()
    assert text.count("Ctrl-C stops a reply") == 2  # after Ctrl-C at the prompt, and for /help
    assert "(the oldest turn was dropped" in text
    assert [m["content"] for m in session.turns if m["role"] == "user"] == ["third message"]
    assert all(len(m["content"]) > 0 for m in session.turns)
