"""The base model: from the GGUF file careflow's engine serves, or from a Hugging Face directory.

From GGUF, transformers dequantizes the weights to fp32: they equal the quantized values
llama.cpp computes with, so the adapter trains against the model that is served. The manifest
records the sha256 of the GGUF file; the engine refuses an adapter whose manifest names another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .dataset import sha256_file

# Architectures whose GGUF conversion permutes the rows of the q and k projections (from the
# Hugging Face rotate-half RoPE layout to GGML's interleaved one). Qwen2 and others use NEOX
# RoPE in GGML and keep the Hugging Face layout.
PERMUTED_ARCHS = {"llama"}

# Hugging Face model_type -> GGUF general.architecture, for bases given as a HF directory.
HF_TO_GGUF_ARCH = {"llama": "llama", "qwen2": "qwen2", "mistral": "llama", "gemma3_text": "gemma3"}


@dataclass
class BaseInfo:
    """What the manifest and the exporter need to know about the base."""

    source: str  # the path given
    served_gguf: str  # the GGUF file the engine serves (sha256 of this file)
    sha256: str
    size: int
    arch: str
    n_head: int
    n_head_kv: int
    add_bos: bool
    bos_id: int | None


def gguf_facts(path: str) -> dict:
    """general.architecture, head counts and BOS settings from a GGUF file's metadata."""
    import gguf

    reader = gguf.GGUFReader(path)

    def val(key, default=None):
        f = reader.fields.get(key)
        if f is None:
            return default
        try:
            return f.contents()
        except Exception:  # noqa: BLE001 - a field the reader cannot decode is as good as absent
            return default

    arch = val("general.architecture")
    if not isinstance(arch, str):
        raise ValueError(f"{path}: no general.architecture (not a GGUF model?)")
    if val("general.type") == "adapter":
        raise ValueError(f"{path} is a GGUF adapter, not a base model")
    n_head = int(val(f"{arch}.attention.head_count", 0) or 0)
    n_head_kv = int(val(f"{arch}.attention.head_count_kv", n_head) or n_head)
    return {
        "arch": arch,
        "n_head": n_head,
        "n_head_kv": n_head_kv,
        "add_bos": bool(val("tokenizer.ggml.add_bos_token", False)),
        "bos_id": val("tokenizer.ggml.bos_token_id"),
    }


def describe(base: str, served_gguf: str | None = None) -> BaseInfo:
    """Facts about the base: ``base`` is a GGUF file or a HF directory (then ``served_gguf``, the
    GGUF file the engine will serve the adapter with, is required for its sha256)."""
    p = Path(base)
    if p.is_file():
        facts = gguf_facts(str(p))
        served = served_gguf or str(p)
    elif p.is_dir():
        if not served_gguf:
            raise ValueError(
                f"{base} is a Hugging Face directory: pass --served-model GGUF, the file the "
                "engine serves (its sha256 goes into the manifest)"
            )
        facts = gguf_facts(served_gguf)
        served = served_gguf
    else:
        raise FileNotFoundError(f"base model not found: {base}")
    return BaseInfo(
        source=str(p),
        served_gguf=served,
        sha256=sha256_file(served),
        size=os.path.getsize(served),
        **facts,
    )


def load(base: str, dtype, quant: str = "none", cache_dir: str | None = None):
    """(tokenizer, model). ``quant='nf4'`` loads the base in 4-bit through bitsandbytes (QLoRA,
    CUDA only); a GGUF base is then dequantized once into ``cache_dir`` in HF format first."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(base)
    if p.is_file():
        kwargs = {"gguf_file": p.name}
        where = str(p.parent)
    else:
        kwargs = {}
        where = str(p)
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    if quant == "nf4":
        import torch
        from transformers import BitsAndBytesConfig

        if p.is_file():
            where = hf_copy(p, cache_dir)
        bnb = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model = AutoModelForCausalLM.from_pretrained(
            where, quantization_config=bnb, dtype=torch.bfloat16, device_map={"": 0}
        )
        return tokenizer, model
    model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kwargs)
    return tokenizer, model


def hf_copy(gguf_path: Path, cache_dir: str | None) -> str:
    """A Hugging Face copy of a GGUF base (fp32 safetensors, dequantized), made once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sha = sha256_file(gguf_path)
    root = Path(cache_dir or Path.home() / ".cache" / "careflow" / "hf-base") / sha[:16]
    if (root / "config.json").is_file():
        return str(root)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    # A GGUF-loaded model refuses save_pretrained while it carries the GGUF quantizer marker.
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    root.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(root))
    tok.save_pretrained(str(root))
    return str(root)
