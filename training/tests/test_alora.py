"""Activated LoRA as trained here equals PEFT's aLoRA and careflow's engine: the context
through the base model (its KV reused), the adapter on the step's tokens only."""

import copy

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from careflow_training import chat  # noqa: E402


def tiny_llama():
    cfg = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def with_random_lora(model, **extra):
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                          lora_dropout=0.0, task_type="CAUSAL_LM", **extra)
    m = peft.get_peft_model(model, cfg)
    torch.manual_seed(1)
    for n, p in m.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.2)
    return m.eval()


def test_step_over_cached_base_context_equals_peft_alora_on_the_full_sequence():
    ctx = [5, 9, 11, 3, 17, 2, 8]
    invocation = [40, 41, 42]
    step = invocation + [7, 19, 23, 31]
    base = tiny_llama()
    ours = with_random_lora(copy.deepcopy(base))
    theirs = with_random_lora(copy.deepcopy(base), alora_invocation_tokens=invocation)
    theirs.load_state_dict(ours.state_dict())
    with torch.no_grad():
        with ours.disable_adapter():
            kv = ours(input_ids=torch.tensor([ctx]), use_cache=True).cache
        split = ours(input_ids=torch.tensor([step]), cache=copy.deepcopy(kv), use_cache=True).logits[0]
        full = theirs(input_ids=torch.tensor([ctx + step])).logits[0, len(ctx):]
        # A plain LoRA over everything differs (the context's KV changed under the adapter).
        plain = ours(input_ids=torch.tensor([ctx + step])).logits[0, len(ctx):]
        # The cached context is reusable: a second step gives the same logits.
        again = ours(input_ids=torch.tensor([step]), cache=copy.deepcopy(kv), use_cache=True).logits[0]
    assert torch.allclose(split, full, atol=1e-5), (split - full).abs().max()
    assert not torch.allclose(split, plain, atol=1e-3)
    assert torch.equal(split, again)


class ToyTokenizer:
    """Characters as tokens; the two ChatML markers as one token each."""

    def encode(self, text, add_special_tokens=False):
        out, i = [], 0
        while i < len(text):
            if text.startswith("<|im_start|>", i):
                out.append(1)
                i += len("<|im_start|>")
            elif text.startswith("<|im_end|>", i):
                out.append(2)
                i += len("<|im_end|>")
            else:
                out.append(ord(text[i]))
                i += 1
        return out


def test_the_step_holds_the_user_turn_header_and_answer_and_the_loss_is_on_the_answer():
    t = chat.ChatML(ToyTokenizer())
    msgs = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "P"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "R"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "xy"},
    ]
    e = t.encode(msgs)
    nl = ord("\n")
    ctx_text = [1, *map(ord, "system\nS"), 2, nl, 1, *map(ord, "user\nP"), 2, nl,
                1, *map(ord, "assistant\nA"), 2, nl, 1, *map(ord, "user\nR"), 2, nl]
    assert e.context == ctx_text
    assert e.step == [1, *map(ord, "user\nQ"), 2, nl, 1, *map(ord, "assistant\n"), ord("x"), ord("y"), 2]
    assert [x for x in e.labels if x != chat.IGNORE] == [ord("x"), ord("y"), 2]
    # After an assistant reply the closing markup moves into the next step (the engine
    # decodes it in the next turn).
    e2 = t.encode(msgs[:4] + [{"role": "assistant", "content": "z"}])
    assert e2.step[:2] == [2, nl] and e2.context[-1] == ord("A")


def test_invocation_tokens_are_the_common_opening_and_fit_cuts_the_context_from_the_left():
    a = chat.Encoded([1, 2, 3], [9, 8, 7, 1], [-100, -100, -100, 1])
    b = chat.Encoded([1, 2], [9, 8, 6, 1, 5], [-100, -100, -100, 1, 5])
    assert chat.invocation_tokens([a, b]) == [9, 8]
    assert chat.fit(a, 5).context == [2, 3][-1:]
    assert chat.fit(a, 3) is None
    assert chat.fit(a, 10) is a


def test_a_context_extended_from_the_cached_shared_prefix_equals_the_context_computed_whole():
    model = with_random_lora(tiny_llama())
    shared, rest, step = [5, 9, 11, 3], [17, 2, 8, 30], [40, 41, 7, 19]
    with torch.no_grad(), model.disable_adapter():
        whole = model(input_ids=torch.tensor([shared + rest]), use_cache=True).cache
        prefix = model(input_ids=torch.tensor([shared]), use_cache=True).cache
        extended = model(input_ids=torch.tensor([rest]), cache=copy.deepcopy(prefix), use_cache=True).cache
    with torch.no_grad():
        a = model(input_ids=torch.tensor([step]), cache=whole, use_cache=True).logits
        b = model(input_ids=torch.tensor([step]), cache=extended, use_cache=True).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_the_shared_prefix_is_the_system_message():
    t = chat.ChatML(ToyTokenizer())
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "P"},
            {"role": "assistant", "content": "A"}, {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "x"}]
    e = t.encode(msgs)
    assert e.shared == len([1, *map(ord, "system\nS"), 2, ord("\n")])
    assert t.encode(msgs[:1] + msgs[3:]).shared == len(t.encode(msgs[:1] + msgs[3:]).context)
