"""Help that teaches: `kebr --help` and every subcommand's help end with an example that parses, and an
error says what to do next. A new subcommand is made with `kebr.cli.command(..., example=...)`."""

import argparse
import shlex
import subprocess
import sys

from kebr.cli import build_parser


def subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(words, parser) of every subcommand, nested ones (kebr plots dataset) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,), sub
                yield from subcommands(sub, prefix + (name,))


def test_every_help_ends_with_an_example_that_parses():
    parser = build_parser()
    commands = list(subcommands(parser))
    assert len(commands) > 15
    for words, sub in commands:
        help_text = sub.format_help().rstrip()
        assert "\nexample:\n" in help_text, f"`kebr {' '.join(words)} --help` has no example"
        example = help_text.rsplit("\nexample:\n", 1)[1].strip().splitlines()
        for line in example:
            argv = shlex.split(line)
            assert argv[0] == "kebr" and argv[1:1 + len(words)] == list(words), f"example {line!r} runs another command"
            args = parser.parse_args(argv[1:])  # the example is a valid command line (argparse exits if not)
            assert callable(args.func)
    top = parser.format_help().rstrip()
    assert "\nexamples:\n" in top and top.splitlines()[-1].lstrip().startswith(("kebr ", "snakemake "))


def test_an_error_names_the_next_step(tmp_path):
    result = subprocess.run([sys.executable, "-m", "kebr", "plan", "--config", str(tmp_path / "missing.yaml"),
                             "--dataset", "mosi", "--out", str(tmp_path / "plan")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "missing.yaml" in result.stderr and "kebr plan --help" in result.stderr
