"""What every benchmark shares: the machine's description, the questions, timing summaries, results files.

Benchmarks never assert a speed: machines are shared and noisy (±10 % run to run here), so each one
measures its baseline in the same run, interleaves repetitions, and reports medians, minimums and ratios.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# Converted SmolLM2 weights (GGUF dequantised once) are shared with the tests.
DEFAULT_MODEL_CACHE = str(ROOT / ".pytest_cache" / "neuronmap-models")
MODEL_KEY = "smollm2_135m"

# Common English words; those the tokenizer reads as one token (with their leading space) make the
# questions, so a question of n words and marks is n tokens long.
WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "they",
    "you",
    "were",
    "her",
    "she",
    "there",
    "one",
    "all",
    "we",
    "their",
    "has",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "time",
    "people",
    "can",
    "what",
    "about",
    "year",
    "other",
    "only",
    "new",
    "some",
    "could",
    "these",
    "two",
    "may",
    "first",
    "then",
    "do",
    "any",
    "like",
    "my",
    "now",
    "over",
    "such",
    "our",
    "man",
    "me",
    "even",
    "most",
    "made",
    "after",
    "also",
    "did",
    "many",
    "before",
    "must",
    "through",
    "back",
    "years",
    "where",
    "much",
    "your",
    "way",
    "well",
    "down",
    "should",
    "because",
    "each",
    "just",
    "those",
    "how",
    "too",
    "little",
    "state",
    "good",
    "very",
    "make",
    "world",
    "still",
    "own",
    "see",
    "men",
    "work",
    "long",
    "get",
    "here",
    "between",
    "both",
    "life",
    "being",
    "under",
    "never",
    "day",
    "same",
    "another",
    "know",
    "while",
    "last",
    "might",
    "us",
    "great",
    "old",
    "off",
    "come",
    "since",
    "against",
    "go",
    "came",
    "right",
    "used",
    "take",
    "three",
    "house",
    "model",
    "layer",
    "token",
    "word",
    "text",
    "question",
    "answer",
    "number",
    "water",
    "light",
    "city",
    "river",
    "music",
    "story",
    "game",
    "reason",
    "study",
    "language",
    "school",
    "system",
    "program",
    "problem",
    "fact",
    "group",
    "country",
    "point",
    "money",
    "night",
    "book",
]


def versions(*packages: str) -> dict[str, str]:
    """Installed versions of `packages` ("absent" for those not installed)."""
    found = {"python": platform.python_version()}
    for package in packages:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "absent"
    return found


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return float("nan")


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def _interpreter() -> str:
    """The interpreter as a reader would type it: relative to the repository when it lies inside."""
    executable = Path(sys.executable)
    try:
        return str(executable.relative_to(ROOT))
    except ValueError:
        return str(executable)


def machine(*packages: str) -> dict[str, Any]:
    """Where and when a benchmark ran: date, command, CPUs, memory, load, library versions."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([_interpreter(), *sys.argv]),
        "commit": _git_commit(),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": _memory_gib(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "versions": versions("torch", "transformers", "numpy", "zarr", *packages),
    }


def make_questions(
    tokenizer: Any, n: int, seed: int = 0, min_tokens: int = 100, max_tokens: int = 155
) -> tuple[str, ...]:
    """`n` deterministic questions of min_tokens..max_tokens tokens each (uniform), made of common words.

    Words are kept only if " word" is one token, and sentences end with "." (one token), so the length
    drawn is the length the tokenizer sees (give or take the first word, read without its space).
    """
    single = [
        w
        for w in WORDS
        if len(tokenizer.encode(" " + w, add_special_tokens=False)) == 1
        and len(tokenizer.encode(w, add_special_tokens=False)) == 1
    ]
    rng = np.random.default_rng(seed)
    questions = []
    for _ in range(n):
        target = int(rng.integers(min_tokens, max_tokens + 1))
        units: list[str] = []
        sentence = 0
        while len(units) < target - 1:
            if sentence >= 6 and rng.random() < 0.12:
                units.append(".")
                sentence = 0
            else:
                units.append(" " + str(rng.choice(single)))
                sentence += 1
        units.append("?")
        questions.append("".join(units).lstrip())
    return tuple(questions)


def summary(times: Sequence[float]) -> dict[str, float]:
    """Median and minimum of repeated timings (seconds)."""
    return {"median": statistics.median(times), "min": min(times)}


def write_results(out: str | None, name: str, results: dict[str, Any]) -> Path:
    """Writes results as JSON to `out`, or bench/results/<name>-<UTC time>.json; returns the path."""
    if out:
        path = Path(out)
    else:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS / f"{name}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False, default=str) + "\n")
    return path


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)
