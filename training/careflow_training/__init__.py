"""careflow-training: per-step LoRA / activated-LoRA adapters distilled from teacher traces.

Modules:
- ``dataset``: reads and checks the chat-format JSONL that ``careflow distill generate`` writes
  (a bad line is named by its number);
- ``chat``: renders an example into tokens exactly as careflow's engine feeds them (ChatML,
  markup with special tokens, content as plain text) and splits it into the context the base
  model computes and the step's own tokens the adapter applies to;
- ``base``: the base model, from the GGUF file the engine serves (dequantized by transformers)
  or from a Hugging Face directory; its sha256 and GGUF facts;
- ``train``: the training loop (``python -m careflow_training.train``), CPU fp32 LoRA or CUDA
  QLoRA;
- ``export``: PEFT LoRA -> GGUF LoRA adapter for llama.cpp (``python -m careflow_training.export``);
- ``manifest``: the JSON manifest written beside each adapter.
"""

__version__ = "0.1.0"
