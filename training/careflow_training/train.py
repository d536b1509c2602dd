"""Trains one adapter for one workflow step and exports it for careflow's engine.

    python -m careflow_training.train --base MODEL.gguf --dataset plan.jsonl --step plan \\
        --mode alora --rank 16 --steps 40 --out adapters/

Writes ``OUT/<name>.gguf`` (GGUF LoRA for llama.cpp), ``OUT/<name>.json`` (the manifest) and
``OUT/<name>.peft/`` (the PEFT adapter, for Hugging Face / vLLM users).

Modes:
- ``alora`` (activated LoRA): the adapter is applied only to the step's own tokens (its user
  message, the assistant header and the answer); the context before them is computed by the
  base model, as careflow's engine serves it (a step adapter applies only to its turn's tokens,
  the session's earlier KV stays as the base computed it). Training does exactly that: the
  context goes through the base model once, without gradients, and is cached (for the first
  step of a workflow every example shares it: the shared prefix is computed once per run); the
  step's tokens run forward and backward under the adapter on top of that KV. PEFT's own aLoRA
  (``LoraConfig(alora_invocation_tokens=…)``) computes the same thing on the full sequence; its
  invocation tokens (the fixed opening of the step's turn) are written to the GGUF adapter and
  the PEFT config.
- ``lora``: the adapter applies to every token, context included. Served, it belongs to a
  session opened with that adapter (the engine's one-adapter-per-session mode); a per-step
  plain LoRA invalidates the shared-prefix KV.

Hardware: CPU -> fp32 LoRA on the base dequantized from GGUF (set --threads to the FREE cores;
oversubscribed, a step is several times slower). CUDA -> QLoRA by default: the base in 4-bit NF4
with double quantization and bf16 compute (bitsandbytes, ``pip install .[qlora]``),
``prepare_model_for_kbit_training``, LoRA in bf16 autocast.

Standard output carries one JSON object a line (progress for ``careflow distill train``); logs
and warnings go to standard error. Exit 2: bad input (a dataset line, a base); 1: anything else.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import time
from pathlib import Path

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SHORT = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


class Progress:
    """JSON lines on the real standard output; everything else printed goes to stderr."""

    def __init__(self):
        self.out = sys.stdout
        sys.stdout = sys.stderr

    def emit(self, event: str, **fields):
        self.out.write(json.dumps({"event": event, **fields}) + "\n")
        self.out.flush()


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m careflow_training.train", description="Train one step adapter.")
    ap.add_argument("--base", required=True, help="the base: the GGUF file the engine serves, or a HF directory")
    ap.add_argument("--served-model", help="the GGUF file the engine serves (needed when --base is a HF directory)")
    ap.add_argument("--dataset", required=True, help="the step's chat JSONL (from `careflow distill generate`)")
    ap.add_argument("--step", required=True, help="the workflow step the adapter is for (e.g. plan)")
    ap.add_argument("--name", help="adapter name (default: the step)")
    ap.add_argument("--mode", choices=["alora", "lora"], default="alora")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, help="LoRA alpha (default: 2 x rank)")
    ap.add_argument("--targets", default="q,k,v,o,gate,up,down", help="projections to adapt (comma-separated)")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps")
    ap.add_argument("--batch", type=int, default=8, help="examples per optimizer step (gradient accumulation)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--max-len", type=int, default=4096, help="tokens per example; the context is cut from the left")
    ap.add_argument("--threads", type=int, help="torch threads (default: all cores; use the FREE cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quant", choices=["auto", "none", "nf4"], default="auto", help="auto: nf4 on CUDA, none on CPU")
    ap.add_argument("--cpu", action="store_true", help="train on the CPU even when CUDA is present")
    ap.add_argument("--f16", action="store_true", help="store the GGUF adapter in f16")
    ap.add_argument("--probe-tokens", type=int, default=24, help="greedy tokens recorded for the first example (0: none)")
    ap.add_argument("--out", required=True, help="output directory")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    progress = Progress()
    a = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(a, progress)
    except BadInput as e:
        progress.emit("error", kind="input", message=str(e))
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - reported to the caller as a line it can show
        progress.emit("error", kind="internal", message=f"{type(e).__name__}: {e}")
        raise


class BadInput(Exception):
    pass


def run(a, progress: Progress) -> int:
    from . import base as base_mod
    from . import chat, dataset, export
    from . import manifest as manifest_mod

    started = time.time()
    name = a.name or a.step
    targets = []
    for t in a.targets.split(","):
        t = t.strip()
        if t not in SHORT and t not in TARGETS:
            raise BadInput(f"--targets: unknown projection `{t}` (use {', '.join(SHORT)})")
        targets.append(SHORT.get(t, t))
    if a.rank < 1 or a.steps < 1 or a.batch < 1:
        raise BadInput("--rank, --steps and --batch must be at least 1")
    try:
        examples = dataset.load(a.dataset)
    except dataset.DatasetError as e:
        raise BadInput(str(e)) from None
    except OSError as e:
        raise BadInput(f"{a.dataset}: {e}") from None
    try:
        base = base_mod.describe(a.base, a.served_model)
    except (OSError, ValueError) as e:
        raise BadInput(str(e)) from None

    import torch

    cuda = torch.cuda.is_available() and not a.cpu
    quant = a.quant if a.quant != "auto" else ("nf4" if cuda else "none")
    if quant == "nf4" and not cuda:
        raise BadInput("--quant nf4 (QLoRA) needs CUDA; on a CPU train fp32 LoRA (--quant none)")
    device = torch.device("cuda" if cuda else "cpu")
    threads = a.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    progress.emit(
        "start", step=a.step, name=name, mode=a.mode, examples=len(examples), steps=a.steps,
        device=device.type, quant=quant, threads=threads,
    )

    t = time.time()
    tok, model = base_mod.load(a.base, torch.float32, quant)
    if quant != "nf4":  # a 4-bit model is placed on the GPU as it loads
        model.to(device)
    load_s = time.time() - t
    progress.emit("loaded", seconds=round(load_s, 1))

    tmpl = chat.ChatML(tok, base.add_bos, base.bos_id)
    encoded, lines, skipped = [], [], 0
    for e in examples:
        enc = chat.fit(tmpl.encode(e.messages), a.max_len)
        if enc is None:
            skipped += 1
        else:
            encoded.append(enc)
            lines.append(e.line)
    if not encoded:
        raise BadInput(f"every example's step is longer than --max-len {a.max_len}")
    invocation = chat.invocation_tokens(encoded) if a.mode == "alora" else []

    from peft import LoraConfig, get_peft_model

    alpha = a.alpha if a.alpha is not None else 2.0 * a.rank
    lcfg = LoraConfig(r=a.rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    if quant == "nf4":
        from peft import prepare_model_for_kbit_training

        # aLoRA runs only the step's tokens with gradients (the context's KV comes from the
        # cache): activations are small. A plain LoRA runs whole sequences: checkpoint them.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=a.mode == "lora")
    model = get_peft_model(model, lcfg)
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    warmup = max(1, a.steps // 10)

    def lr_at(s: int) -> float:
        if s < warmup:
            return a.lr * (s + 1) / warmup
        return a.lr * (1.0 - 0.9 * (s - warmup) / max(1, a.steps - warmup))

    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if quant == "nf4" else torch.autocast("cpu", enabled=False)
    )
    contexts: dict[tuple, object] = {}
    context_tokens = 0
    context_seconds = 0.0

    def context_kv(ids: list[int], shared: int = 0):
        """The base model's KV of a context, cached. The shared prefix (the system message,
        identical across examples) is computed once and each context extends a copy of it."""
        nonlocal context_tokens, context_seconds
        if not ids:
            return None
        key = tuple(ids)
        kv = contexts.get(key)
        if kv is None:
            start, past = 0, None
            if 0 < shared < len(ids):
                past = copy.deepcopy(context_kv(ids[:shared]))
                start = shared
            t0 = time.time()
            with torch.no_grad(), model.disable_adapter(), autocast:
                out = model(
                    input_ids=torch.tensor([ids[start:]], device=device), cache=past, use_cache=True
                )
            kv = out.cache
            context_tokens += len(ids) - start
            context_seconds += time.time() - t0
            if len(contexts) >= 64:
                # Keep the shared prefixes (short keys are reused by every example).
                victim = max(contexts, key=len)
                contexts.pop(victim)
            contexts[key] = kv
        return kv

    def forward(enc):
        """(loss, tokens run forward and backward)."""
        if a.mode == "alora":
            kv = context_kv(enc.context, enc.shared)
            ids = torch.tensor([enc.step], device=device)
            labels = torch.tensor([enc.labels], device=device)
            with autocast:
                out = model(
                    input_ids=ids, labels=labels, use_cache=kv is not None,
                    cache=copy.deepcopy(kv) if kv is not None else None,
                )
            return out.loss, len(enc.step)
        ids, labels = enc.full()
        with autocast:
            out = model(input_ids=torch.tensor([ids], device=device), labels=torch.tensor([labels], device=device))
        return out.loss, len(ids)

    model.train()
    order: list[int] = []
    losses: list[float] = []
    trained_tokens = 0
    t_train = time.time()
    for s in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(s)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(a.batch):
            if not order:
                order = list(range(len(encoded)))
                random.shuffle(order)
            loss, n = forward(encoded[order.pop()])
            (loss / a.batch).backward()
            total += float(loss.detach())
            trained_tokens += n
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(total / a.batch)
        elapsed = time.time() - t_train
        progress.emit(
            "step", step=s + 1, steps=a.steps, loss=round(losses[-1], 4), lr=lr_at(s),
            tokens=trained_tokens, tokens_per_s=round(trained_tokens / max(elapsed, 1e-9), 1),
            elapsed_s=round(elapsed, 1),
        )
    train_s = time.time() - t_train
    train_context_s = context_seconds
    model.eval()

    probe = None
    if a.probe_tokens > 0:
        first = encoded[0]
        # The base's context KV (computed for training in alora mode) serves both probes.
        base_kv = context_kv(first.context, first.shared)
        probe = {
            "example_line": lines[0],
            "adapter": greedy(model, first, a.probe_tokens, True, a.mode, device, tok, base_kv),
            "base": greedy(model, first, a.probe_tokens, False, a.mode, device, tok, base_kv),
        }

    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    gguf_path = out_dir / f"{name}.gguf"
    n_tensors = export.export_model(
        model, str(gguf_path), base, alpha, invocation or None,
        extra={"careflow.step": a.step, "careflow.mode": a.mode, "careflow.base_sha256": base.sha256},
        f16=a.f16,
    )
    peft_dir = out_dir / f"{name}.peft"
    if invocation and hasattr(model.peft_config["default"], "alora_invocation_tokens"):
        model.peft_config["default"].alora_invocation_tokens = list(invocation)
    model.save_pretrained(str(peft_dir))

    hyper = {
        "mode": a.mode, "rank": a.rank, "alpha": alpha, "targets": targets, "steps": a.steps,
        "batch": a.batch, "lr": a.lr, "schedule": f"linear warm-up {warmup} steps, then linear decay to 10%",
        "max_len": a.max_len, "seed": a.seed, "dropout": 0.0, "quantization": quant,
        "dtype": "bfloat16 autocast" if quant == "nf4" else "float32", "device": device.type,
        "threads": threads, "trainable_parameters": n_trainable,
    }
    metrics = {
        "train_loss_first": round(losses[0], 4), "train_loss_last": round(losses[-1], 4),
        "train_loss_last5": round(sum(losses[-5:]) / len(losses[-5:]), 4),
        "train_tokens": trained_tokens, "context_tokens": context_tokens,
        "tokens_per_s": round(trained_tokens / max(train_s, 1e-9), 1),
        # Forward + backward + AdamW alone, without the base's context passes.
        "train_tokens_per_s": round(trained_tokens / max(train_s - train_context_s, 1e-9), 1),
        "context_seconds": round(train_context_s, 1),
        "train_seconds": round(train_s, 1), "load_seconds": round(load_s, 1),
        "total_seconds": round(time.time() - started, 1), "examples_skipped_too_long": skipped,
        "tensors": n_tensors,
    }
    if probe:
        metrics["probe"] = probe
    m = manifest_mod.build(
        name=name, step=a.step, mode=a.mode, adapter_file=gguf_path,
        adapter_sha256=dataset.sha256_file(gguf_path), base=base,
        dataset_file=Path(a.dataset), dataset_sha256=dataset.sha256_file(a.dataset),
        examples=len(examples), used=len(encoded), hyperparameters=hyper, metrics=metrics,
        invocation_tokens=invocation or None,
    )
    manifest_path = out_dir / f"{name}.json"
    manifest_mod.write(manifest_path, m)
    progress.emit("done", adapter=str(gguf_path), manifest=str(manifest_path), metrics=metrics)
    return 0


def greedy(model, enc, n: int, with_adapter: bool, mode: str, device, tok, base_kv=None) -> dict:
    """Greedy continuation of the example's step prompt (unconstrained), with or without the
    adapter: the engine must produce the same tokens from the exported GGUF adapter."""
    import contextlib

    import torch

    # The prompt: everything up to the assistant header (the answer's tokens are the target).
    first_target = next(i for i, l in enumerate(enc.labels) if l != -100)
    ctx, prompt = enc.context, enc.step[:first_target]
    off = model.disable_adapter
    tokens: list[int] = []
    with torch.no_grad():
        kv = None
        if ctx and (mode == "alora" or not with_adapter) and base_kv is not None:
            kv = copy.deepcopy(base_kv)
        elif ctx:
            scope = off() if (mode == "alora" or not with_adapter) else contextlib.nullcontext()
            with scope:
                kv = model(input_ids=torch.tensor([ctx], device=device), use_cache=True).cache
        feed = prompt
        with (contextlib.nullcontext() if with_adapter else off()):
            for _ in range(n):
                out = model(input_ids=torch.tensor([feed], device=device), cache=kv, use_cache=True)
                kv = out.cache
                nxt = int(out.logits[0, -1].argmax())
                if nxt == tok.convert_tokens_to_ids("<|im_end|>"):
                    break
                tokens.append(nxt)
                feed = [nxt]
    return {"tokens": tokens, "text": tok.decode(tokens)}


if __name__ == "__main__":
    sys.exit(main())
