"""The chat-format JSONL datasets of ``careflow distill generate``: one example a line.

    {"messages": [{"role": "system", "content": "..."}, ..., {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "{...}"}],
     "meta": {...}}

The last message is the step's answer (the training target); the user message before it is the
step's prompt; everything earlier is the context the step saw. ``meta`` is free-form (careflow
records the step, the message id, the output schema, the teacher's final disposition).

``load`` checks every line and raises :class:`DatasetError` naming the first bad line (1-based),
so a broken file fails before minutes of model loading.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROLES = ("system", "user", "assistant")


class DatasetError(ValueError):
    """A dataset line that is not valid chat JSON; ``line`` is 1-based."""

    def __init__(self, path: str, line: int, reason: str):
        super().__init__(f"{path}:{line}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


@dataclass
class Example:
    messages: list[dict]
    meta: dict = field(default_factory=dict)
    line: int = 0


def check_line(text: str) -> tuple[list[dict], dict]:
    """Parses one line; raises ``ValueError`` with the reason it is not a chat example."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError('no "messages" array (a chat example needs one)')
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"messages[{i}] is not an object")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role is {role!r}, not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content is not a string")
        if "<|im_start|>" in content or "<|im_end|>" in content:
            raise ValueError(f"messages[{i}].content contains chat markup")
    if messages[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's answer (the target)")
    if not messages[-1]["content"].strip():
        raise ValueError("the assistant's answer is empty")
    if len(messages) < 2 or messages[-2]["role"] != "user":
        raise ValueError("the answer must follow the step's user message")
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise ValueError('"meta" is not an object')
    return messages, meta


def load(path: str | Path) -> list[Example]:
    """Every example of ``path``; raises :class:`DatasetError` at the first bad line."""
    path = str(path)
    examples = []
    with open(path, encoding="utf-8") as f:
        for n, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                messages, meta = check_line(text)
            except ValueError as e:
                raise DatasetError(path, n, str(e)) from None
            examples.append(Example(messages, meta, n))
    if not examples:
        raise DatasetError(path, 0, "the dataset has no examples")
    return examples


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """``python -m careflow_training.dataset FILE...``: checks files; exit 2 on a bad line."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m careflow_training.dataset FILE.jsonl...", file=sys.stderr)
        return 2
    for p in argv:
        try:
            n = len(load(p))
        except DatasetError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"error: {p}: {e}", file=sys.stderr)
            return 2
        print(f"{p}: {n} examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
