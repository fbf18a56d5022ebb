"""Bulk data values by the path a BulkDataURI names (PS3.18 10.4.1.1.5): `tag` or `seq/item/tag`."""

from __future__ import annotations

import re
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset

from ferry.errors import InvalidQuery, NotFound

_PATH = re.compile(r"^(?:[0-9A-Fa-f]{8}/\d{1,6}/){0,8}[0-9A-Fa-f]{8}$")


def parse_bulk_path(path: str) -> list[int]:
    """`00540016/0/00181072` -> [seq tag, item index, tag]; refused unless exactly that shape."""
    if not _PATH.match(path):
        raise InvalidQuery(f"bulk data path {path[:80]!r} is not tag or sequence/item/tag")
    return [int(part, 16) if len(part) == 8 else int(part) for part in path.split("/")]


def read_bulk_value(handle: BinaryIO, steps: list[int]) -> bytes:
    """The raw value of the element; pixel data as stored (encapsulated stays encapsulated)."""
    dataset: Dataset = dcmread(handle, force=True)
    for position in range(0, len(steps) - 1, 2):
        sequence = dataset.get(steps[position])
        index = steps[position + 1]
        if sequence is None or sequence.VR != "SQ" or index >= len(sequence.value):
            raise NotFound("no such bulk data")
        dataset = sequence.value[index]
    element = dataset.get(steps[-1])
    if element is None or not isinstance(element.value, bytes | bytearray):
        raise NotFound("no such bulk data")
    return bytes(element.value)
