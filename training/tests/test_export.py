"""The GGUF export: the q/k lora_b RoPE permutation, names, shapes and metadata."""

import numpy as np
import pytest

from careflow_training import export


def rope_rotate_half(x, pos, base=10000.0):
    """Hugging Face llama RoPE on one head: pairs (i, i + d/2)."""
    d = x.shape[-1]
    inv = base ** (-np.arange(0, d, 2) / d)
    ang = pos * inv
    cos, sin = np.concatenate([np.cos(ang)] * 2), np.concatenate([np.sin(ang)] * 2)
    rot = np.concatenate([-x[d // 2:], x[: d // 2]])
    return x * cos + rot * sin


def rope_interleaved(x, pos, base=10000.0):
    """GGML's normal (non-NEOX) RoPE on one head: pairs (2i, 2i + 1)."""
    d = x.shape[-1]
    inv = base ** (-np.arange(0, d, 2) / d)
    ang = pos * inv
    out = x.copy()
    out[0::2] = x[0::2] * np.cos(ang) - x[1::2] * np.sin(ang)
    out[1::2] = x[0::2] * np.sin(ang) + x[1::2] * np.cos(ang)
    return out


@pytest.mark.parametrize("n_head, head_dim", [(3, 8), (9, 64)])
def test_permuted_rows_make_interleaved_rope_equal_rotate_half(n_head, head_dim):
    rng = np.random.default_rng(0)
    rank, n_in = 4, 16
    b = rng.normal(size=(n_head * head_dim, rank))
    a = rng.normal(size=(rank, n_in))
    x = rng.normal(size=n_in)
    pos = 7
    hf = (b @ a @ x).reshape(n_head, head_dim)
    gg = (export.permute_rows(b, n_head) @ a @ x).reshape(n_head, head_dim)
    for h in range(n_head):
        want = rope_rotate_half(hf[h], pos)
        got = rope_interleaved(gg[h], pos)
        # The same rotated values, in the interleaved order.
        assert np.allclose(export.permute_rows(want[:, None], 1)[:, 0], got)
        # Without the permutation the rotation mixes the wrong pairs.
        wrong = rope_interleaved(hf[h], pos)
        assert not np.allclose(export.permute_rows(want[:, None], 1)[:, 0], wrong)


def test_k_uses_the_kv_head_count():
    w = np.arange(3 * 8 * 2, dtype=np.float32).reshape(3 * 8, 2)
    assert np.array_equal(export.permute_rows(w, 9, 3), export.permute_rows(w, 3))
    # Within one head of 8 rows: [0..3 | 4..7] -> [0, 4, 1, 5, 2, 6, 3, 7].
    assert list(export.permute_rows(w, 3)[:8, 0] // 2) == [0, 4, 1, 5, 2, 6, 3, 7]


def fake_state(n_layer=2, n_embd=16, n_kv=8, rank=2, ffn=24):
    rng = np.random.default_rng(1)
    shapes = {"q_proj": (n_embd, n_embd), "k_proj": (n_kv, n_embd), "v_proj": (n_kv, n_embd),
              "o_proj": (n_embd, n_embd), "gate_proj": (ffn, n_embd), "up_proj": (ffn, n_embd),
              "down_proj": (n_embd, ffn)}
    state = {}
    for layer in range(n_layer):
        for proj, (n_out, n_in) in shapes.items():
            part = "self_attn" if proj[0] in "qkvo" else "mlp"
            pre = f"base_model.model.model.layers.{layer}.{part}.{proj}"
            state[f"{pre}.lora_A.default.weight"] = rng.normal(size=(rank, n_in)).astype(np.float32)
            state[f"{pre}.lora_B.default.weight"] = rng.normal(size=(n_out, rank)).astype(np.float32)
    return state


def test_tensors_are_named_and_only_q_k_lora_b_are_permuted_for_llama():
    state = fake_state()
    t = export.gguf_tensors(state, "llama", n_head=4, n_head_kv=2)
    assert len(t) == 2 * 7 * 2
    q_b = state["base_model.model.model.layers.1.self_attn.q_proj.lora_B.default.weight"]
    k_b = state["base_model.model.model.layers.1.self_attn.k_proj.lora_B.default.weight"]
    v_b = state["base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight"]
    q_a = state["base_model.model.model.layers.1.self_attn.q_proj.lora_A.default.weight"]
    assert np.array_equal(t["blk.1.attn_q.weight.lora_b"], export.permute_rows(q_b, 4))
    assert np.array_equal(t["blk.1.attn_k.weight.lora_b"], export.permute_rows(k_b, 4, 2))
    assert np.array_equal(t["blk.1.attn_v.weight.lora_b"], v_b)
    assert np.array_equal(t["blk.1.attn_q.weight.lora_a"], q_a)
    assert not np.array_equal(t["blk.1.attn_q.weight.lora_b"], q_b)
    # qwen2's GGUF keeps the Hugging Face layout (NEOX RoPE): nothing is permuted.
    t2 = export.gguf_tensors(state, "qwen2", n_head=4, n_head_kv=2)
    assert np.array_equal(t2["blk.1.attn_q.weight.lora_b"], q_b)


def test_written_adapter_reads_back_with_llama_cpp_shapes_and_keys(tmp_path):
    gguf = pytest.importorskip("gguf")
    t = export.gguf_tensors(fake_state(), "llama", n_head=4, n_head_kv=2)
    p = tmp_path / "a.gguf"
    export.write(str(p), t, "llama", 4.0, [1, 4093, 198])
    r = gguf.GGUFReader(str(p))
    assert r.fields["general.type"].contents() == "adapter"
    assert r.fields["adapter.type"].contents() == "lora"
    assert r.fields["general.architecture"].contents() == "llama"
    assert abs(r.fields["adapter.lora.alpha"].contents() - 4.0) < 1e-6
    inv = r.fields["adapter.alora.invocation_tokens"]
    assert inv.contents() == [1, 4093, 198]
    assert inv.types == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT32]
    by_name = {x.name: x for x in r.tensors}
    # GGML ne = [n_in, rank] for lora_a and [rank, n_out] for lora_b.
    assert list(by_name["blk.0.attn_q.weight.lora_a"].shape) == [16, 2]
    assert list(by_name["blk.0.attn_k.weight.lora_b"].shape) == [2, 8]
    assert list(by_name["blk.0.ffn_down.weight.lora_a"].shape) == [24, 2]


def test_unknown_projection_is_refused():
    with pytest.raises(ValueError, match="exports LoRA on"):
        export.gguf_tensors({"model.layers.0.self_attn.qkv_proj.lora_A.weight": np.zeros((2, 2))}, "llama", 2, 2)
