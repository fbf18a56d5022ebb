"""`ferry`'s command list: every command in the help, and each command reading only its own
module (a command should not wait for the imports of all the others)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = (
    "serve", "import", "archive", "config", "viewer", "admin", "dimse", "notifications", "audit",
    "oversight", "policy", "transfer", "worklist", "download", "request", "retention",
)  # fmt: skip

_LOADED = """
import json, sys
from ferry.cli import build_parser
build_parser(sys.argv[1:])
heavy = ("pydicom", "httpx", "sqlalchemy")
commands = [m for m in sys.modules if m.startswith("ferry.") and m.endswith("_commands")]
print(json.dumps({"commands": sorted(commands), "heavy": [m for m in heavy if m in sys.modules]}))
"""


def _loaded(*argv: str) -> dict[str, list[str]]:
    """The command modules (and heavy libraries) a fresh interpreter imports to parse `argv`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    done = subprocess.run(
        [sys.executable, "-c", _LOADED, *argv],
        capture_output=True, text=True, timeout=120, check=True, env=environment,
    )  # fmt: skip
    loaded: dict[str, list[str]] = json.loads(done.stdout)
    return loaded


def _ferry_script() -> str:
    return str(Path(sys.executable).with_name("ferry"))


def test_the_help_lists_every_command() -> None:
    shown = subprocess.run([_ferry_script(), "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0
    listed = shown.stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    assert listed == list(COMMANDS)


def test_an_unknown_command_is_refused_with_every_command_named() -> None:
    refused = subprocess.run(
        [_ferry_script(), "frobnicate"], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2
    assert "invalid choice: 'frobnicate'" in refused.stderr
    assert all(f"'{command}'" in refused.stderr for command in COMMANDS)


@pytest.mark.parametrize(
    ("argv", "modules"),
    [
        (("config",), []),
        (("archive", "check"), []),
        (("admin", "routes"), ["ferry.admin_commands"]),
        (("audit", "verify"), ["ferry.audit_commands"]),
        (("worklist", "--as", "a@b.test"), ["ferry.exchange_commands"]),
        (("policy", "explain"), ["ferry.policy_commands"]),
    ],
)
def test_a_command_reads_only_its_own_module(argv: tuple[str, ...], modules: list[str]) -> None:
    assert _loaded(*argv)["commands"] == modules


def test_config_needs_neither_the_database_nor_dicom() -> None:
    assert _loaded("config")["heavy"] == []


def test_a_command_word_after_an_option_is_still_found() -> None:
    assert _loaded("--no-such-option", "admin")["commands"] == ["ferry.admin_commands"]


def test_subcommand_help_comes_from_its_module() -> None:
    shown = subprocess.run(
        [_ferry_script(), "retention", "--help"], capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0 and "usage: ferry retention" in shown.stdout
