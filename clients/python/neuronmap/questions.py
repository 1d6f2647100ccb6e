"""Question files: JSONL lines with a "question" field (the original NeuronMap format), or plain text with
one question per line. Blank lines are skipped; "-" reads standard input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from neuronmap.errors import InvalidArgument


def read_questions(path: str) -> list[str]:
    """The questions of a file, in order. InvalidArgument when the file is empty or malformed."""
    if path == "-":
        text = sys.stdin.read()
    else:
        file = Path(path)
        if not file.is_file():
            raise InvalidArgument(f"question file {path} does not exist")
        text = file.read_text(encoding="utf-8")
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise InvalidArgument(f"question file {path} is empty: it needs one question per line or JSONL lines")
    jsonl = path.endswith(".jsonl") or lines[0][1].lstrip().startswith("{")
    if not jsonl:
        return [line.rstrip("\n") for _, line in lines]
    questions = []
    for number, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InvalidArgument(f"{path}:{number}: not a JSON line ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("question"), str):
            raise InvalidArgument(
                f'{path}:{number}: a JSONL question file needs a "question" string on every line'
            )
        questions.append(record["question"])
    return questions


def read_targets(path: str) -> list[str]:
    """The "target" field of every line of a JSONL question file (decoder inputs for T5-like models).

    Empty when the file has no targets; InvalidArgument when only some lines have one.
    """
    if path == "-" or not Path(path).is_file():
        return []
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines or not lines[0].lstrip().startswith("{"):
        return []
    targets = [json.loads(line).get("target") for line in lines]
    if all(t is None for t in targets):
        return []
    if not all(isinstance(t, str) for t in targets):
        raise InvalidArgument(f'{path}: give a "target" string on every line or on none')
    return [str(t) for t in targets]
