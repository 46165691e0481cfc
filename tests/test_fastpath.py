"""The fast path's bookkeeping: the switch, packs that follow every change of a weight, pages given back."""
from __future__ import annotations

import copy
import pickle
import sys

import pytest
import torch

from pretrained import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, fastpath
from pretrained.layers import Linear

pytestmark = pytest.mark.skipif(not fastpath.ONEDNN_AVAILABLE, reason="this torch build has no oneDNN")


@pytest.fixture(autouse=True)
def default_mode(monkeypatch):
    monkeypatch.setattr(fastpath, "EXACT", False)


@pytest.mark.parametrize("env, exact", [({}, False), ({"PRETRAINED_EXACT": "1"}, True),
                                        ({"PRETRAINED_EXACT": "0"}, False), ({"PRETRAINED_EXACT": "true"}, True),
                                        ({"PRETRAINED_FAST_LINEAR": "1"}, False),
                                        ({"PRETRAINED_FAST_LINEAR": "0"}, True)])
def test_switch_from_environment(env, exact, caplog):
    assert fastpath.exact_from_environment(env) is exact
    assert ("PRETRAINED_FAST_LINEAR is deprecated" in caplog.text) == ("PRETRAINED_FAST_LINEAR" in env)
    with pytest.raises(ValueError, match="PRETRAINED_EXACT='maybe'"):
        fastpath.exact_from_environment({"PRETRAINED_EXACT": "maybe"})


def tiny_gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=32)).eval()


def logits(model, ids, exact: bool):
    model.exact = exact
    with torch.inference_mode():
        return model(ids).logits


IDS = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(1))


def test_exact_attribute_reaches_every_layer_and_frees_packs():
    model = tiny_gpt2()
    logits(model, IDS, exact=False)
    conv = model.transformer.h[0].attn.c_attn
    assert fastpath.has_pack(conv.weight) and fastpath.has_pack(model.lm_head.weight)
    model.exact = True
    assert conv.exact and model.lm_head.exact and model.transformer.exact
    assert not any(fastpath.has_pack(p) for p in model.parameters())
    with pytest.raises(TypeError, match="exact must be"):
        model.exact = "yes"


def edits():
    def in_place(m):
        with torch.no_grad():
            m.transformer.h[0].attn.c_attn.weight.mul_(2.0)

    def load_state(m):
        state = {k: v * 1.5 if k.endswith("c_fc.weight") else v for k, v in m.state_dict().items()}
        m.load_state_dict(state)

    def assign(m):
        m.transformer.h[1].mlp.c_proj.weight = torch.nn.Parameter(m.transformer.h[1].mlp.c_proj.weight * -1)

    def optimizer_step(m):
        m.train()
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        m(IDS, labels=IDS).loss.backward()
        opt.step()
        m.eval()

    def round_trip_dtype(m):
        m.to(torch.bfloat16).to(torch.float32)

    def tied_head(m):
        with torch.no_grad():
            m.transformer.wte.weight[5:9] += 1.0

    return [in_place, load_state, assign, optimizer_step, round_trip_dtype, tied_head]


@pytest.mark.parametrize("edit", edits(), ids=lambda f: f.__name__)
def test_packs_follow_every_change_of_a_weight(edit):
    model = tiny_gpt2()
    logits(model, IDS, exact=False)  # packs made
    edit(model)
    exact = logits(model, IDS, exact=True)
    fast = logits(model, IDS, exact=False)
    assert (fast - exact).abs().max() <= 1e-5


def test_copies_and_pickles_of_a_packed_model_work():
    model = tiny_gpt2()
    before = logits(model, IDS, exact=False)
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert torch.equal(logits(other, IDS, exact=False), before)


def test_hooks_fire_on_the_same_modules_in_both_modes(hf_checkpoint):
    model = BertModel.from_pretrained(hf_checkpoint("BertModel"))
    for exact in (False, True):
        model.exact = exact
        seen = []
        handle = model.encoder.layer[0].attention.self.query.register_forward_hook(lambda m, i, o: seen.append(o))
        with torch.inference_mode():
            model(torch.tensor([[5, 6, 7]]))
        handle.remove()
        assert len(seen) == 1 and seen[0].shape == (1, 3, 32)


def resident(t: torch.Tensor) -> int:
    """How many of the pages wholly inside `t` are mapped into this process (/proc/self/pagemap bit 63)."""
    lo, hi = fastpath._page_range(t, inward=True)
    with open("/proc/self/pagemap", "rb", buffering=0) as f:
        f.seek(lo // fastpath._PAGE * 8)
        raw = f.read((hi - lo) // fastpath._PAGE * 8)
    return sum(raw[i + 7] >> 7 for i in range(0, len(raw), 8))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pages are given back on Linux only")
def test_packed_mmapped_weights_leave_memory_and_stay_readable(minilm_dir, tmp_path, hf_model):
    model = BertModel.from_pretrained(minilm_dir)  # packs at load
    dense = model.encoder.layer[0].intermediate.dense.weight  # 1536 x 384 fp32, 2.3 MB, memory-mapped
    assert fastpath.has_pack(dense) and resident(dense) == 0
    reference = BertModel.from_pretrained(minilm_dir, exact=True)
    assert torch.equal(dense, reference.encoder.layer[0].intermediate.dense.weight)  # read back from the file
    # a weight written to (copy-on-write pages) is never given back, and its pack follows the edit
    with torch.no_grad():
        dense.mul_(0.5)
        reference.encoder.layer[0].intermediate.dense.weight.mul_(0.5)
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    with torch.inference_mode():
        a = model(ids).last_hidden_state
        b = reference(ids).last_hidden_state
    assert resident(dense) > 0 and (a - b).abs().max() <= 1e-4
    model.save_pretrained(tmp_path)
    assert torch.equal(hf_model(str(tmp_path)).encoder.layer[0].intermediate.dense.weight, dense)


def linear_weights(model):
    return [m.weight for m in model.modules() if hasattr(m, "prepack")]


def group_packs(model) -> dict:
    """{id(weight): the group pack holding it} for the fused groups (layers.FusedLinears) packed now."""
    found = {}
    for module in model.modules():
        for name, members in getattr(module, "fused_groups", dict)().items():
            pack = module.__dict__.get("_pretrained_pack_" + name)
            if pack is not None and pack.tensor is not None:
                found.update({id(m.weight): pack for m in members})
    return found


def packed(model, weight) -> bool:
    return fastpath.has_pack(weight) or id(weight) in group_packs(model)


def test_from_pretrained_packs_ahead_so_the_first_forward_does_not(hf_checkpoint):
    folder = hf_checkpoint("BertForMaskedLM")
    model = BertModel.from_pretrained(folder)
    assert all(packed(model, w) for w in linear_weights(model))
    exact = BertModel.from_pretrained(folder, exact=True)
    assert not any(packed(exact, w) for w in linear_weights(exact)) and not group_packs(exact)


def tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("make, groups", [(lambda: BertModel(BertConfig(vocab_size=97, hidden_size=32,
                                                                         num_hidden_layers=2, num_attention_heads=4,
                                                                         intermediate_size=64)), 1),
                                          (tiny_llama, 2)])
def test_layers_reading_one_input_run_as_one_packed_call(make, groups):
    """q/k/v (and Llama's gate/up) are packed side by side, once: the layers keep no pack of their own; the
    outputs match exact mode; an in-place edit of one member repacks the group."""
    model = make().eval()
    ids = IDS.clamp(max=96)
    exact = logits_or_hidden(model, ids, exact=True)
    fast = logits_or_hidden(model, ids, exact=False)
    assert (fast - exact).abs().max() <= 1e-4
    grouped = group_packs(model)
    assert len({id(p) for p in grouped.values()}) == groups * 2  # per layer
    assert not any(fastpath.has_pack(w) for w in model.parameters() if id(w) in grouped)
    layer = model.encoder.layer[0].attention.self if hasattr(model, "encoder") else model.model.layers[0].self_attn
    member = layer.fused_groups()["qkv"][2].weight  # value
    with torch.no_grad():
        member.mul_(2.0)
    assert (logits_or_hidden(model, ids, exact=False) - logits_or_hidden(model, ids, exact=True)).abs().max() <= 1e-4
    assert not torch.allclose(logits_or_hidden(model, ids, exact=False), fast, atol=1e-3)


def logits_or_hidden(model, ids, exact):
    model.exact = exact
    with torch.inference_mode():
        out = model(ids)
    return out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state


@pytest.mark.parametrize("where", ["query", "value", "intermediate_act_fn", "intermediate.dense", "gpt2 mlp.act",
                                   "gpt2 mlp.c_fc"])
def test_a_hook_on_a_fused_layer_sees_its_own_call(where):
    """With a hook on any layer of a fused group (or on the activation computed inside oneDNN's call), the
    layers run one by one: the hook fires once per forward with the layer's output, as in exact mode."""
    torch.manual_seed(0)
    if where.startswith("gpt2"):
        model = tiny_gpt2()
        target = model.get_submodule("transformer.h.0." + where.split()[1])
    else:
        model = BertModel(BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                     intermediate_size=64)).eval()
        layer = model.encoder.layer[0]
        target = {"query": layer.attention.self.query, "value": layer.attention.self.value,
                  "intermediate_act_fn": layer.intermediate.intermediate_act_fn,
                  "intermediate.dense": layer.intermediate.dense}[where]
    seen = {}
    for exact in (True, False):
        model.exact = exact
        outputs = []
        handle = target.register_forward_hook(lambda m, i, o: outputs.append(o))
        with torch.inference_mode():
            model(IDS.clamp(max=96))
        handle.remove()
        seen[exact] = outputs
    assert len(seen[True]) == len(seen[False]) == 1
    assert (seen[True][0] - seen[False][0]).abs().max() <= 1e-4


def test_gpt2_mlp_computes_its_gelu_inside_the_linear_call():
    """Default mode: GPT-2's tanh GELU is a post-op of c_fc's oneDNN call (no separate tanh), within 1e-4 of
    exact mode, which computes transformers' NewGELUActivation formula op by op."""
    model = tiny_gpt2()
    ops = {}
    for exact in (True, False):
        with torch.profiler.profile() as prof:
            out = logits_or_hidden(model, IDS.clamp(max=96), exact=exact)
        ops[exact] = ({e.key for e in prof.key_averages()}, out)
    assert "aten::tanh" in ops[True][0] and "aten::tanh" not in ops[False][0]
    assert (ops[True][1] - ops[False][1]).abs().max() <= 1e-4


def test_a_replaced_layer_is_called_not_bypassed():
    """A user's own module in place of `value` (an adapter, say) is called: the fused path is only for plain
    Linear layers."""
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                 intermediate_size=64)).eval()
    attention = model.encoder.layer[0].attention.self

    class Doubled(torch.nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    class OurDoubled(Linear):  # a subclass of our own Linear that changes forward is not fused either
        def forward(self, x):
            return 2 * super().forward(x)

    def patched(n_in, n_out):  # our own Linear whose instance's forward was replaced (as accelerate's hooks do)
        layer = Linear(n_in, n_out)
        plain_forward = layer.forward
        layer.forward = lambda x: 2 * plain_forward(x)
        return layer

    original = attention.value
    before = logits_or_hidden(model, IDS.clamp(max=96), exact=False)
    for make in (Doubled, OurDoubled, patched):
        doubled = make(32, 32)
        doubled.load_state_dict(original.state_dict())
        attention.value = doubled
        after = logits_or_hidden(model, IDS.clamp(max=96), exact=False)
        assert (after - logits_or_hidden(model, IDS.clamp(max=96), exact=True)).abs().max() <= 1e-4
        assert not torch.allclose(before, after, atol=1e-3)


def test_moving_a_model_frees_its_stale_group_packs():
    model = tiny_llama()
    logits_or_hidden(model, IDS, exact=False)
    assert group_packs(model)
    model.to(torch.bfloat16)
    assert not group_packs(model)
    out = logits_or_hidden(model, IDS, exact=False)
    assert out.dtype == torch.bfloat16 and group_packs(model)


@pytest.mark.parametrize("saved, asked", [(torch.bfloat16, "auto"), (None, torch.bfloat16)])
def test_bfloat16_runs_on_packed_bf16_weights(hf_checkpoint, hf_model, batch, saved, asked):
    """A bf16 checkpoint with dtype="auto", and an fp32 one loaded with dtype=torch.bfloat16, compute in bf16 on
    packed weights, close to transformers in bf16."""
    folder = hf_checkpoint("BertModel", dtype=saved)
    model = BertModel.from_pretrained(folder, dtype=asked)
    assert model.dtype == torch.bfloat16
    assert all(packed(model, w) for w in linear_weights(model))
    groups = group_packs(model)
    assert all((groups[id(w)].tensor if id(w) in groups else fastpath.packed_weight(w)).dtype == torch.bfloat16
               for w in linear_weights(model))
    inputs = batch(99)
    theirs = hf_model(folder, "BertModel", dtype=torch.bfloat16)
    with torch.inference_mode():
        a, b = model(**inputs).last_hidden_state, theirs(**inputs).last_hidden_state
    assert a.dtype == torch.bfloat16 and (a.float() - b.float()).abs().max() <= 0.05 * b.float().abs().max()


def test_to_keeps_packs_of_unchanged_weights_and_frees_the_others():
    model = tiny_gpt2()
    logits(model, IDS, exact=False)
    head = model.lm_head.weight
    pack = head.__dict__["_pretrained_pack"].tensor
    model.to("cpu").to(torch.float32)  # nothing changes: the packs stay
    assert head.__dict__["_pretrained_pack"].tensor is pack
    model.to(torch.bfloat16)
    assert not any(fastpath.has_pack(p) for p in model.parameters())


@pytest.mark.parametrize("plain", [True, False])
def test_one_row_takes_the_kernel_this_machine_measured_faster(monkeypatch, plain):
    """Decoding at batch 1 calls every linear layer on one row. Where the BLAS's matrix-vector kernel on the plain
    weight measured faster, that row runs F.linear (exact mode's bits, no pack made); else the packed kernel.
    More rows take the packed kernel either way, and generation gives exact mode's tokens."""
    monkeypatch.setitem(fastpath._ROW_PLAIN, torch.float32, plain)
    model = tiny_gpt2()
    one_row = logits(model, IDS[:1, :1], exact=False)
    weights = linear_weights(model)
    assert all(fastpath.has_pack(w) != plain for w in weights)
    exact_row = logits(model, IDS[:1, :1], exact=True)
    assert torch.equal(one_row, exact_row) if plain else (one_row - exact_row).abs().max() <= 1e-4
    logits(model, IDS, exact=False)
    assert all(fastpath.has_pack(w) for w in weights)  # 2 x 9 rows: packed
    settings = dict(max_new_tokens=6, do_sample=False, eos_token_id=96, pad_token_id=96, bos_token_id=96)
    with torch.inference_mode():
        fast = model.generate(IDS[:1], **settings)
        model.exact = True
        assert torch.equal(fast, model.generate(IDS[:1], **settings))


def test_the_one_row_kernel_is_measured_once_per_dtype_at_load(monkeypatch, hf_checkpoint, tmp_path):
    """from_pretrained of a model that generates measures the two kernels for its dtype (once per process) and
    warms a one-token step; a model that does not generate, or exact mode, measures nothing."""
    monkeypatch.setattr(fastpath, "_ROW_PLAIN", {})
    BertModel.from_pretrained(hf_checkpoint("BertForMaskedLM"))
    tiny_gpt2().save_pretrained(tmp_path)
    GPT2LMHeadModel.from_pretrained(tmp_path, exact=True)
    assert fastpath._ROW_PLAIN == {}
    GPT2LMHeadModel.from_pretrained(tmp_path)
    assert set(fastpath._ROW_PLAIN) == {torch.float32} and isinstance(fastpath._ROW_PLAIN[torch.float32], bool)
    calls = []
    monkeypatch.setattr(fastpath, "_measure_single_row", lambda dtype: calls.append(dtype) or True)
    GPT2LMHeadModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    GPT2LMHeadModel.from_pretrained(tmp_path)
    assert calls == [torch.bfloat16] and fastpath._ROW_PLAIN[torch.bfloat16] is True
