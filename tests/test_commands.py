"""Every command of the project explains every option it takes (`--help`), and every one-shot command prints
JSON with `--json`: the two long-running processes (`qcluster`, `supervise`) write logs instead."""

from __future__ import annotations

import argparse

import pytest
from django.core.management import get_commands, load_command_class

PROJECT_APPS = {"operations", "runtime", "checkpoints", "marketdata", "training", "backtesting", "agents"}
SERVICES = {"qcluster", "supervise"}  # processes that run until stopped: they log, and print no report
COMMANDS = sorted(name for name, app in get_commands().items() if app in PROJECT_APPS)


def leaves(parser: argparse.ArgumentParser, path: str):
    """The parser of each thing a user can run: the command itself, or each of its sub-commands."""
    subparsers = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not subparsers:
        yield path, parser
        return
    for name, child in subparsers[0].choices.items():
        yield from leaves(child, f"{path} {name}")


def parsers():
    for name in COMMANDS:
        command = load_command_class(get_commands()[name], name)
        yield from leaves(command.create_parser("manage.py", name), name)


def test_the_project_has_its_commands():
    assert {"operations", "checkpoints", "marketdata", "train", "backtest", "agent", "workers", "workercredentials",
            "sweep_orphans", "reconcile", "supervise", "qcluster"} <= set(COMMANDS)


@pytest.mark.parametrize(("path", "parser"), list(parsers()), ids=lambda value: value if isinstance(value, str) else "")
def test_every_option_and_argument_has_help(path, parser):
    missing = [action.option_strings[0] if action.option_strings else action.dest for action in parser._actions
               if not action.help or action.help == argparse.SUPPRESS]
    assert missing == [], f"manage.py {path}: no help for {missing}"


@pytest.mark.parametrize(("path", "parser"), [(path, parser) for path, parser in parsers()
                                              if path.split()[0] not in SERVICES],
                         ids=lambda value: value if isinstance(value, str) else "")
def test_every_one_shot_command_takes_json(path, parser):
    options = {option for action in parser._actions for option in action.option_strings}
    assert "--json" in options, f"manage.py {path} has no --json"
