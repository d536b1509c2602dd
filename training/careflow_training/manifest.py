"""The manifest written beside each adapter (``<name>.json`` next to ``<name>.gguf``).

careflow's engine reads it (crates/engine/src/manifest.rs) and refuses an adapter whose
``base_model.sha256`` is not the sha256 of the model file it serves.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path

FORMAT = "careflow-adapter/1"


def versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("torch", "transformers", "peft", "gguf", "accelerate", "bitsandbytes"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "unknown")
        except Exception:  # noqa: BLE001 - an optional package that is absent is simply not listed
            continue
    from . import __version__

    out["careflow_training"] = __version__
    return out


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def build(
    *,
    name: str,
    step: str,
    mode: str,
    adapter_file: Path,
    adapter_sha256: str,
    base,
    dataset_file: Path,
    dataset_sha256: str,
    examples: int,
    used: int,
    hyperparameters: dict,
    metrics: dict,
    invocation_tokens: list[int] | None,
) -> dict:
    return {
        "format": FORMAT,
        "name": name,
        "step": step,
        "mode": mode,
        "adapter_file": adapter_file.name,
        "adapter_sha256": adapter_sha256,
        "base_model": {
            "sha256": base.sha256,
            "file": Path(base.served_gguf).name,
            "size": base.size,
            "architecture": base.arch,
        },
        "dataset": {
            "file": dataset_file.name,
            "sha256": dataset_sha256,
            "examples": examples,
            "used": used,
        },
        "hyperparameters": hyperparameters,
        "metrics": metrics,
        "alora_invocation_tokens": invocation_tokens,
        "created_at": now(),
        "versions": versions(),
    }


def write(path: Path, manifest: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(path)
