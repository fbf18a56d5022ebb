"""`--patient-id` on the command line: given, or read from standard input (`-`).

A patient ID is identifying data. Given as an argument it shows in every user's `ps` while the
command runs and stays in the shell's history; `--patient-id -` reads it from the first line of
standard input instead (`ferry audit search --patient-id - < id.txt`, or typed at the prompt).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

HELP = "the patient's ID; - reads it from standard input (kept out of `ps` and shell history)"


def patient_id(value: str) -> str:
    if value != "-":
        return value
    read = sys.stdin.readline().strip()
    if not read:
        raise argparse.ArgumentTypeError("no patient ID on standard input")
    return read


def add_patient_id(parser: argparse.ArgumentParser, **options: Any) -> None:
    parser.add_argument("--patient-id", type=patient_id, help=HELP, **options)
