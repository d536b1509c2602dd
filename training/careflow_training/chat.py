"""Examples as tokens, the way careflow's engine feeds them to llama.cpp.

The engine renders ChatML (SmolLM2 and Qwen2.5 both use it) one message at a time: the markup
(``<|im_start|>ROLE\\n`` and ``<|im_end|>\\n``) is tokenized with special tokens parsed, the content
as plain text, and a generated reply is opened with ``<|im_start|>assistant\\n``. Training
tokenizes the same way so the adapter learns on the token sequence it will see when served.

An example splits in two:

- the **context**: every message before the step's user message. Served, it is already in the
  session's KV cache, computed by the base model (the shared prefix) and by earlier steps;
- the **step**: the step's user message, the assistant header, the answer and its ``<|im_end|>``.
  Served, these are the tokens of the step's turn, the only ones its adapter is applied to.
  When the context ends with an assistant reply, the engine decodes that reply's closing
  ``<|im_end|>\\n`` at the start of the next turn, under the next step's adapter, so those tokens
  move into the step too.

The loss is on the answer and its ``<|im_end|>`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE = -100
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"


@dataclass
class Encoded:
    context: list[int]
    step: list[int]
    labels: list[int]
    # Tokens at the start of the context that every example of a workflow shares (the BOS and
    # the system message: careflow's shared prefix); 0 when unknown or cut.
    shared: int = 0

    @property
    def target_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)

    def full(self) -> tuple[list[int], list[int]]:
        """The whole sequence and its labels (plain LoRA trains on it at once)."""
        return self.context + self.step, [IGNORE] * len(self.context) + self.labels


class ChatML:
    """ChatML rendering with any tokenizer that has ``encode(text, add_special_tokens=False)``."""

    def __init__(self, tokenizer, add_bos: bool = False, bos_id: int | None = None):
        self.tok = tokenizer
        self.add_bos = add_bos and bos_id is not None
        self.bos_id = bos_id
        start = self._special(IM_START)
        end = self._special(IM_END)
        if len(start) != 1 or len(end) != 1:
            raise ValueError(
                "the tokenizer has no ChatML special tokens (<|im_start|>, <|im_end|>): "
                "careflow's engine renders ChatML for this model family"
            )
        self.im_end = end[0]

    def _special(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False)) if text else []

    def _plain(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False)) if text else []

    def message(self, role: str, content: str) -> tuple[list[int], list[int], list[int]]:
        """(opening markup, content, closing markup) of one message."""
        return (
            self._special(f"{IM_START}{role}\n"),
            self._plain(content),
            self._special(f"{IM_END}\n"),
        )

    def encode(self, messages: list[dict]) -> Encoded:
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise ValueError("an example ends with the step's user message and the answer")
        context: list[int] = [self.bos_id] if self.add_bos else []
        shared = 0
        for i, m in enumerate(messages[:-2]):
            o, c, e = self.message(m["role"], m["content"])
            context += o + c + e
            if i == 0 and m["role"] == "system":
                shared = len(context)
        step: list[int] = []
        labels: list[int] = []
        if len(messages) > 2 and messages[-3]["role"] == "assistant":
            # The previous reply's end-of-turn is decoded in this step's turn (see above).
            closing = self._special(f"{IM_END}\n")
            if context[-len(closing):] == closing:
                del context[-len(closing):]
                step += closing
                labels += [IGNORE] * len(closing)
        o, c, e = self.message("user", messages[-2]["content"])
        header = self._special(f"{IM_START}assistant\n")
        prompt = o + c + e + header
        step += prompt
        labels += [IGNORE] * len(prompt)
        answer = self._plain(messages[-1]["content"]) + [self.im_end]
        step += answer
        labels += answer
        return Encoded(context, step, labels, min(shared, len(context)))


def fit(enc: Encoded, max_len: int) -> Encoded | None:
    """Cuts the context from the left so the example holds at most ``max_len`` tokens;
    ``None`` when the step alone is longer."""
    if len(enc.step) > max_len:
        return None
    keep = max_len - len(enc.step)
    if len(enc.context) <= keep:
        return enc
    return Encoded(enc.context[len(enc.context) - keep:] if keep else [], enc.step, enc.labels, 0)


def invocation_tokens(encoded: list[Encoded], limit: int = 16) -> list[int]:
    """The aLoRA invocation sequence: the tokens every example's step starts with (the step's
    user-turn opening and the fixed start of its prompt), at most ``limit``."""
    if not encoded:
        return []
    first = encoded[0].step
    n = min(limit, *(len(e.step) for e in encoded))
    common = 0
    while common < n and all(e.step[common] == first[common] for e in encoded):
        common += 1
    return list(first[:common])
