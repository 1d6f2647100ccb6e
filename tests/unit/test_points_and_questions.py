"""The hook-point vocabulary and question files."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuronmap.errors import InvalidArgument
from neuronmap.points import HookPoint, layer_range, parse_point
from neuronmap.questions import read_questions


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("embed", HookPoint("", "embed")),
        ("final_norm", HookPoint("", "final_norm")),
        ("blocks.3.resid_post", HookPoint("", "resid_post", 3)),
        ("blocks.12.attn_out", HookPoint("", "attn_out", 12)),
        ("encoder.blocks.0.mlp_out", HookPoint("encoder", "mlp_out", 0)),
        ("decoder.blocks.2.cross_attn_out", HookPoint("decoder", "cross_attn_out", 2)),
        ("decoder.final_norm", HookPoint("decoder", "final_norm")),
    ],
)
def test_canonical_points_parse_and_print_back(name: str, expected: HookPoint) -> None:
    assert parse_point(name) == expected
    assert expected.name == name


@pytest.mark.parametrize(
    "raw", ["transformer.h.5.mlp.c_proj", "encoder.layer.0.attention.output.dense", "blocks.x.resid"]
)
def test_anything_else_is_a_raw_module_path(raw: str) -> None:
    assert parse_point(raw) is None


def test_layer_range_takes_start_to_end_minus_one() -> None:
    assert layer_range(0, 3) == ["blocks.0.resid_post", "blocks.1.resid_post", "blocks.2.resid_post"]
    assert layer_range(2, 4, ("attn_out", "mlp_out"), stack="encoder") == [
        "encoder.blocks.2.attn_out",
        "encoder.blocks.2.mlp_out",
        "encoder.blocks.3.attn_out",
        "encoder.blocks.3.mlp_out",
    ]
    with pytest.raises(ValueError, match="empty"):
        layer_range(3, 3)


def test_jsonl_questions_in_the_original_format(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "What is 2+2?"}\n\n{"question": "Who are you?", "id": 7}\n')
    assert read_questions(str(path)) == ["What is 2+2?", "Who are you?"]


def test_plain_text_questions_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "q.txt"
    path.write_text("First question?\n   \nSecond: with {braces}\n")
    assert read_questions(str(path)) == ["First question?", "Second: with {braces}"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("\n  \n", "is empty"),
        (
            '{"question": "ok"}\n{"text": "no question field"}\n',
            ':2: a JSONL question file needs a "question"',
        ),
        ('{"question": "ok"}\n{not json\n', ":2: not a JSON line"),
    ],
)
def test_bad_question_files_say_what_is_wrong(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(content)
    with pytest.raises(InvalidArgument, match=message):
        read_questions(str(path))


def test_missing_question_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="does not exist"):
        read_questions(str(tmp_path / "nope.jsonl"))
