"""``kdlab eval --help`` and ``kdlab export --help`` show examples of their own, each a command the parser
accepts."""

import shlex

import pytest

from kdlab.cli.main import build_parser

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("command", ["eval", "export"])
def test_help_shows_examples_of_the_command_that_parse(command):
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions if a.choices).choices[command]
    text = sub.format_help()
    assert "examples:" in text
    examples = [ln.split("#")[0].strip() for ln in text.split("examples:", 1)[1].splitlines()
                if ln.strip().startswith(f"kdlab {command} ")]
    assert len(examples) >= 3
    for line in examples:
        args = parser.parse_args(shlex.split(line)[1:])
        assert args.command == command and args.args
