"""PEFT LoRA -> GGUF LoRA adapter, as llama.cpp's adapter loader reads it.

Layout: for each adapted projection, ``blk.N.<proj>.weight.lora_a`` (GGML ne = [n_in, rank],
i.e. PEFT's lora_A [rank, n_in] as stored) and ``…lora_b`` (ne = [rank, n_out], PEFT's lora_B
[n_out, rank]); keys ``general.architecture`` (the base's), ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, and for an activated LoRA
``adapter.alora.invocation_tokens`` (uint32 array). llama.cpp scales the delta by alpha / rank,
as PEFT does.

**The RoPE trap**: for llama-architecture models, the GGUF converter permutes the rows of the
q and k projection weights from Hugging Face's rotate-half RoPE layout to GGML's interleaved
layout. A LoRA delta ``B @ A`` adds to those weights, so its output rows (``lora_b``) must be
permuted the same way — with n_head for q and n_head_kv for k. Without it the adapter loads and
silently computes something else. ``lora_a`` (the input side) is unchanged.

CLI: ``python -m careflow_training.export --peft DIR --base MODEL.gguf --out ADAPTER.gguf``.
"""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np

from .base import PERMUTED_ARCHS

# Hugging Face projection -> GGUF tensor base name.
PROJ = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_([AB])(?:\.[A-Za-z0-9_]+)?\.weight$")


def permute_rows(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """The row permutation llama.cpp's converter applies to q (``n_head``) and k
    (``n_head, n_head_kv``) weights: within each head, rows [x0..x_{d/2}, y0..y_{d/2}]
    (rotate-half pairs) become interleaved [x0, y0, x1, y1, …]."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    if w.shape[0] % (2 * n_head):
        raise ValueError(f"cannot permute {w.shape[0]} rows into {n_head} heads")
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def gguf_tensors(
    state: dict, arch: str, n_head: int, n_head_kv: int, dtype=np.float32
) -> dict[str, np.ndarray]:
    """GGUF tensor name -> array, from a PEFT LoRA state dict (name -> tensor or array)."""
    out: dict[str, np.ndarray] = {}
    for name, t in state.items():
        m = KEY.search(name)
        if not m:
            continue
        layer, proj, ab = m.group(1), m.group(2), m.group(3)
        if proj not in PROJ:
            raise ValueError(f"{name}: careflow exports LoRA on {', '.join(PROJ)} only")
        arr = t.detach().float().cpu().numpy() if hasattr(t, "detach") else np.asarray(t, dtype=np.float32)
        if ab == "B" and arch in PERMUTED_ARCHS:
            if proj == "q_proj":
                arr = permute_rows(arr, n_head, n_head)
            elif proj == "k_proj":
                arr = permute_rows(arr, n_head, n_head_kv)
        gname = f"blk.{layer}.{PROJ[proj]}.weight.lora_{ab.lower()}"
        out[gname] = np.ascontiguousarray(arr.astype(dtype))
    if not out:
        raise ValueError("no LoRA tensors found (expected PEFT names like …layers.N.self_attn.q_proj.lora_A…)")
    for name in out:
        pair = name[:-1] + ("b" if name.endswith("a") else "a")
        if pair not in out:
            raise ValueError(f"{name} has no matching {pair}")
    return out


def write(
    path: str,
    tensors: dict[str, np.ndarray],
    arch: str,
    alpha: float,
    invocation_tokens: list[int] | None = None,
    extra: dict[str, str] | None = None,
) -> None:
    """Writes a GGUF LoRA adapter file."""
    import gguf

    w = gguf.GGUFWriter(path, arch)
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(alpha))
    if invocation_tokens:
        w.add_key_value(
            "adapter.alora.invocation_tokens",
            [int(t) for t in invocation_tokens],
            gguf.GGUFValueType.ARRAY,
            sub_type=gguf.GGUFValueType.UINT32,
        )
    for k, v in (extra or {}).items():
        w.add_string(k, v)
    for name in sorted(tensors):
        w.add_tensor(name, tensors[name])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def export_model(peft_model, path: str, base, alpha: float, invocation_tokens=None, extra=None, f16=False):
    """Exports the LoRA weights of an in-memory PEFT model."""
    state = {k: v for k, v in peft_model.state_dict().items() if ".lora_" in k}
    tensors = gguf_tensors(
        state, base.arch, base.n_head, base.n_head_kv, np.float16 if f16 else np.float32
    )
    write(path, tensors, base.arch, alpha, invocation_tokens, extra)
    return len(tensors)


def main(argv: list[str] | None = None) -> int:
    import json
    from pathlib import Path

    from safetensors.numpy import load_file

    from .base import describe

    ap = argparse.ArgumentParser(prog="python -m careflow_training.export", description=__doc__.split("\n")[0])
    ap.add_argument("--peft", required=True, help="a PEFT adapter directory (adapter_config.json, adapter_model.safetensors)")
    ap.add_argument("--base", required=True, help="the base model: GGUF file (or HF dir with --served-model)")
    ap.add_argument("--served-model", help="the GGUF the engine serves, when --base is a HF directory")
    ap.add_argument("--out", required=True, help="the GGUF adapter file to write")
    ap.add_argument("--f16", action="store_true", help="store the tensors as f16 (half the size, same outputs)")
    a = ap.parse_args(argv)
    try:
        base = describe(a.base, a.served_model)
        cfg = json.loads((Path(a.peft) / "adapter_config.json").read_text())
        state = load_file(str(Path(a.peft) / "adapter_model.safetensors"))
        tensors = gguf_tensors(state, base.arch, base.n_head, base.n_head_kv, np.float16 if a.f16 else np.float32)
        write(a.out, tensors, base.arch, float(cfg.get("lora_alpha", cfg.get("r", 8))), cfg.get("alora_invocation_tokens"))
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"event": "exported", "adapter": a.out, "tensors": len(tensors)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
