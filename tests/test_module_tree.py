"""The module tree is transformers' tree: the same modules, the same forward hooks firing in a forward pass (in the
same order, with the same values), each submodule callable on its own and computing what transformers' computes.

Probing, activation steering, captum and PEFT address modules by name and rely on their hooks firing; these tests
compare, for every class of every family, the names of the modules whose forward hooks fire in one forward with
transformers' for the same tiny checkpoint, under both of its attention implementations ("sdpa" and "eager").
The comparison is exact. transformers has `nn.Dropout` modules that never run (BERT's `attention.self.dropout`,
GPT-2's `attn.attn_dropout`: its attention functions apply the probability themselves); we keep them too, so
`named_modules()` is the same set as well, and neither side fires them. (GPT-2's `attn_dropout` does run in
transformers with attn_implementation="eager" and reorder_and_upcast_attn=True, a mixed-precision variant we do not
implement: there, and only there, its hook fires in transformers and not here.)
"""
from __future__ import annotations

import pytest
import torch
import transformers

from pretrained.models import bart, bert, gpt2

BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
            max_position_embeddings=24)
GPT2 = dict(vocab_size=99, n_embd=32, n_layer=2, n_head=2, n_positions=24, pad_token_id=0, bos_token_id=2,
            eos_token_id=2)
BART = dict(vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=24)
FAMILIES = {
    "bert": (bert, transformers.BertConfig, BERT, ["BertModel", "BertForSequenceClassification", "BertForMaskedLM",
                                                   "BertForTokenClassification", "BertForQuestionAnswering"]),
    "gpt2": (gpt2, transformers.GPT2Config, GPT2, ["GPT2Model", "GPT2LMHeadModel", "GPT2ForSequenceClassification"]),
    "bart": (bart, transformers.BartConfig, BART, ["BartModel", "BartForConditionalGeneration",
                                                   "BartForSequenceClassification"]),
}
CASES = [(family, arch) for family, (_, _, _, archs) in FAMILIES.items() for arch in archs]


def perturb(model, seed: int = 0) -> None:
    """Random biases and norm weights, so that a module computing the wrong thing shows."""
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name.lower() or name.startswith("ln_"):
                p.add_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """`checkpoints(family, arch)` -> folder where transformers saved a tiny seeded, perturbed model."""
    made = {}

    def make(family: str, arch: str) -> str:
        if (family, arch) not in made:
            _, hf_config, sizes, _ = FAMILIES[family]
            torch.manual_seed(0)
            model = getattr(transformers, arch)(hf_config(**sizes))
            perturb(model)
            folder = tmp_path_factory.mktemp(arch)
            model.save_pretrained(folder)
            made[family, arch] = str(folder)
        return made[family, arch]

    return make


def load_pair(checkpoints, family: str, arch: str, attn: str = "sdpa"):
    folder = checkpoints(family, arch)
    theirs = getattr(transformers, arch).from_pretrained(folder, attn_implementation=attn).eval()
    ours = getattr(FAMILIES[family][0], arch).from_pretrained(folder, attn_implementation=attn).eval()
    return ours, theirs


def inputs() -> dict:
    """Two rows, the second padded; every row ends with id 2 (BART's eos, which its classifier pools)."""
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, 99, (2, 7), generator=g)
    attention_mask = torch.ones(2, 7, dtype=torch.long)
    attention_mask[1, 5:] = 0
    input_ids[0, -1] = input_ids[1, 4] = 2
    input_ids[1, 5:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def first_tensor(output):
    """The main tensor of a module's output: itself, the first of a tuple, or the first field of a ModelOutput."""
    while not isinstance(output, torch.Tensor):
        output = output[0]
    return output


def record(model, **kwargs) -> dict:
    """Name -> main output tensor of every module whose forward hook fires in one forward, in firing order."""
    seen = {}

    def hook(name: str):
        def keep(module, args, output) -> None:  # returns None: the output is not replaced
            seen.setdefault(name, first_tensor(output))
        return keep

    hooks = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()]
    try:
        with torch.no_grad():
            model(**kwargs)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family,arch", CASES)
def test_hooks_fire_on_transformers_modules_with_transformers_values(checkpoints, family, arch, attn, tol):
    ours, theirs = load_pair(checkpoints, family, arch, attn)
    assert {n for n, _ in ours.named_modules()} == {n for n, _ in theirs.named_modules()}
    ours_seen, theirs_seen = record(ours, **inputs()), record(theirs, **inputs())
    assert set(ours_seen) == set(theirs_seen), (sorted(set(theirs_seen) - set(ours_seen)),
                                                sorted(set(ours_seen) - set(theirs_seen)))
    assert list(ours_seen) == list(theirs_seen)  # and they first fire in the same order
    for name, theirs_out in theirs_seen.items():  # what a probe reads at each module is transformers' value
        a = ours_seen[name]
        if a.shape != theirs_out.shape and a.size(0) == 1:
            # position and token-type lookups of ids shared by every row: we embed them once, (1, T, C), and
            # broadcast; transformers embeds them per row, (B, T, C). Same values.
            a = a.expand_as(theirs_out)
        assert a.shape == theirs_out.shape, (name, a.shape, theirs_out.shape)
        if a.is_floating_point():
            assert (a - theirs_out).abs().max().item() <= tol, name


@pytest.mark.parametrize("family,arch", CASES)
def test_state_dict_keys_are_transformers_keys(checkpoints, family, arch):
    ours, theirs = load_pair(checkpoints, family, arch)
    assert set(ours.state_dict()) == set(theirs.state_dict())


def test_bert_submodules_are_callable_like_transformers(checkpoints, tol):
    ours, theirs = load_pair(checkpoints, "bert", "BertForMaskedLM")
    batch = inputs()
    with torch.no_grad():
        h = ours.bert.embeddings(batch["input_ids"])  # (B, T, C)
        assert (h - theirs.bert.embeddings(batch["input_ids"])).abs().max() <= tol
        enc = ours.bert.encoder(h)
        assert (enc.last_hidden_state - theirs.bert.encoder(h).last_hidden_state).abs().max() <= tol
        assert enc.hidden_states is None and enc.attentions is None
        full = ours.bert.encoder(h, output_hidden_states=True, output_attentions=True)
        assert len(full.hidden_states) == 3 and full.attentions[0].shape == (2, 2, 7, 7)
        assert isinstance(ours.bert.encoder(h, return_dict=False), tuple)
        # a (B, T) mask of 1 / 0 is accepted, and gives what the whole model gives
        masked = ours.bert.encoder(h, attention_mask=batch["attention_mask"]).last_hidden_state
        assert torch.equal(masked, ours.bert(**batch).last_hidden_state)
        layer = ours.bert.encoder.layer[0]
        x, weights = layer(h)
        assert (x - theirs.bert.encoder.layer[0](h)).abs().max() <= tol and weights is None
        y, _ = layer.attention.self(h)
        assert (y - theirs.bert.encoder.layer[0].attention.self(h)[0]).abs().max() <= tol
        a, _ = layer.attention(h)
        assert (a - theirs.bert.encoder.layer[0].attention(h)[0]).abs().max() <= tol
        assert (layer.intermediate(a) - theirs.bert.encoder.layer[0].intermediate(a)).abs().max() <= tol
        logits = ours.cls(x)
        assert (logits - theirs.cls(x)).abs().max() <= tol
        assert (ours.cls.predictions.transform(x) - theirs.cls.predictions.transform(x)).abs().max() <= tol
    pooled_model, pooled_theirs = load_pair(checkpoints, "bert", "BertModel")
    with torch.no_grad():
        assert (pooled_model.pooler(h) - pooled_theirs.pooler(h)).abs().max() <= tol


def test_a_hook_on_a_projection_fires_and_steers_like_transformers(checkpoints, tol):
    """A forward hook replacing `encoder.layer.0.attention.self.query`'s output changes the result as in
    transformers: hooks see the projection that the attention really uses."""
    ours, theirs = load_pair(checkpoints, "bert", "BertModel")
    name = "encoder.layer.0.attention.self.query"
    calls = []
    shift = torch.randn(32, generator=torch.Generator().manual_seed(0)) * 5  # large: tiny weights barely attend

    def steer(module, args, output):
        calls.append(name)
        return output + shift

    results = []
    for model in (ours, theirs):
        handle = model.get_submodule(name).register_forward_hook(steer)
        with torch.no_grad():
            results.append(model(**inputs()).last_hidden_state)
        handle.remove()
    assert calls == [name, name]
    with torch.no_grad():
        unsteered = ours(**inputs()).last_hidden_state
    assert (results[0] - unsteered).abs().max() > 1e-3  # the hook's output was used
    assert (results[0] - results[1]).abs().max() <= tol


def test_gpt2_blocks_are_callable_like_transformers_and_hooks_fire_while_generating(checkpoints, tol):
    ours, theirs = load_pair(checkpoints, "gpt2", "GPT2LMHeadModel")
    ids = inputs()["input_ids"][:1, :5]
    with torch.no_grad():
        h = ours.transformer.wte(ids) + ours.transformer.wpe(torch.arange(5))  # (1, T, C)
        block, their_block = ours.transformer.h[0], theirs.transformer.h[0]
        x, weights = block(h)  # causal without a mask, as transformers' block
        assert (x - their_block(h)).abs().max() <= tol and weights is None
        y, weights = block.attn(block.ln_1(h), output_attentions=True)
        y_theirs, _ = their_block.attn(their_block.ln_1(h))
        assert (y - y_theirs).abs().max() <= tol and weights.shape == (1, 2, 5, 5)
        assert torch.all(weights[0, :, 0, 1:] == 0)  # causal
        assert (block.mlp(h) - their_block.mlp(h)).abs().max() <= tol
    calls = []
    ours.transformer.h[1].mlp.register_forward_hook(lambda module, args, output: calls.append(output.shape[1]))
    out = ours.generate(ids, max_new_tokens=3, do_sample=False)
    assert calls == [5, 1, 1]  # the prompt, then one token per step through the KV cache
    assert torch.equal(out, theirs.generate(ids, max_new_tokens=3, do_sample=False))


def test_bart_submodules_are_callable_like_transformers_and_hooks_fire_while_generating(checkpoints, tol):
    ours, theirs = load_pair(checkpoints, "bart", "BartForConditionalGeneration")
    batch = inputs()
    with torch.no_grad():
        enc = ours.model.encoder(**batch)
        assert (enc.last_hidden_state - theirs.model.encoder(**batch).last_hidden_state).abs().max() <= tol
        h = enc.last_hidden_state  # (B, T, C)
        layer, their_layer = ours.model.encoder.layers[0], theirs.model.encoder.layers[0]
        x, weights = layer(h)
        assert (x - their_layer(h, attention_mask=None)).abs().max() <= tol and weights is None
        y, _ = layer.self_attn(h)
        assert (y - their_layer.self_attn(h)[0]).abs().max() <= tol
        dec_layer, their_dec_layer = ours.model.decoder.layers[1], theirs.model.decoder.layers[1]
        x, weights, cross = dec_layer(h[:, :4], encoder_hidden_states=h, output_attentions=True)  # causal, no mask
        assert (x - their_dec_layer(h[:, :4], encoder_hidden_states=h)).abs().max() <= tol
        assert weights.shape == (2, 2, 4, 4) and torch.all(weights[:, :, 0, 1:] == 0) and cross.shape == (2, 2, 4, 7)
        y, _ = dec_layer.encoder_attn(h[:, :4], h)
        assert (y - their_dec_layer.encoder_attn(h[:, :4], h)[0]).abs().max() <= tol
    classifier, their_classifier = load_pair(checkpoints, "bart", "BartForSequenceClassification")
    with torch.no_grad():
        pooled = h[:, 0]  # (B, C)
        assert (classifier.classification_head(pooled) - their_classifier.classification_head(pooled)).abs().max() \
            <= tol
    calls = []
    ours.model.encoder.register_forward_hook(lambda module, args, output: calls.append("encoder"))
    ours.model.decoder.layers[1].encoder_attn.register_forward_hook(lambda module, args, output: calls.append(
        args[0].shape[1]))
    out = ours.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert calls == ["encoder", 1, 1, 1]  # the encoder once, then one decoder token per step
    assert torch.equal(out, theirs.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False))
