"""--help reads well: every default shown, required flags marked, no type noise, examples at the top level."""

from __future__ import annotations

import re

import pytest
from conftest import run_cli

COMMANDS = [["pretrain"], ["finetune"], ["extract-features"], ["eval"], ["convert"], ["tokenize", "encode"]]


def _help(capsys, *words) -> str:
    code, out, err = run_cli(capsys, *words, "--help")
    assert code == 0, err
    return re.sub(r"[│╭╮╰╯─]", " ", out)


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_help_has_no_type_labels_no_stray_periods_and_one_default_per_flag(capsys, monkeypatch, words):
    monkeypatch.setenv("COLUMNS", "200")
    text = _help(capsys, *words)
    options = [line for line in text.splitlines() if line.strip().startswith("-") and "--help" not in line]
    assert not [line for line in options if re.search(r"<(bool|str|int|float|list)", line)]
    assert not re.search(r"\w \.\s", text), "a default swallowed as markup leaves 'text .'"
    for line in text.splitlines():
        assert line.count("[default:") <= 1, line
        assert not ("(default: when stderr is a terminal)" in line and "[default: off]" in line), line


def test_finetune_help_shows_the_defaults_that_used_to_vanish_and_marks_what_is_required(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    text = " ".join(_help(capsys, "finetune").split())
    assert "Peak learning rate [default: finetune 3e-4 for models up to 256 wide (bert-mini), 1e-4 wider; features and static word vectors 1e-3]" in text
    assert "CPU threads for torch [default: all cores]" in text
    assert "[required unless --resume]" in text
    assert "Show a progress bar [default: when stderr is a terminal]." in text


def test_top_level_help_has_examples(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    text = _help(capsys)
    assert "Examples:" in text and "ptm pretrain -o runs/sample" in text
