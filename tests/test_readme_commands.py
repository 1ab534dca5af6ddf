"""Every `skysort ...` command README.md shows in a code block is one the command line
accepts (parsed, not run): settings before options, flags that exist, choices that are."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from skysort.cli import build_parser

README = Path(__file__).parents[1] / "README.md"


def _commands() -> list[str]:
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", README.read_text(encoding="utf-8"),
                        flags=re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("skysort ")]


def test_the_readme_shows_commands() -> None:
    assert len(_commands()) >= 10


@pytest.mark.parametrize("command", _commands())
def test_a_readme_command_parses(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    words = shlex.split(command, comments=True)[1:]
    try:
        build_parser().parse_args(words)
    except SystemExit as exc:
        pytest.fail(f"{command!r} is refused: {capsys.readouterr().err.strip()} ({exc})")
