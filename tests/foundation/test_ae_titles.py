"""The one AE title check (PS3.5 Table 6.2-1), as a table; settings, the policy store and the
admin API use it (their tests take REFUSED from here)."""

from __future__ import annotations

import pytest

from foundation.ae_titles import InvalidAETitle, parse_ae_title

# text: the AE title it names, or the words of the refusal
CASES: dict[str, str | InvalidAETitle] = {
    "FERRY": "FERRY",
    "  PACS  ": "PACS",
    "A": "A",
    "SIXTEEN_CHARS_16": "SIXTEEN_CHARS_16",
    "WITH SPACE": "WITH SPACE",
    "  SIXTEEN_CHARS_16  ": "SIXTEEN_CHARS_16",  # spaces around are not significant
    "lower-case.ok": "lower-case.ok",
    "": InvalidAETitle("empty or only spaces"),
    "    ": InvalidAETitle("empty or only spaces"),
    "SEVENTEEN_CHARS17": InvalidAETitle("longer than 16"),
    "BACK\\SLASH": InvalidAETitle("backslash"),
    "TAB\tINSIDE": InvalidAETitle("printable ASCII"),
    "NEWLINE\n": InvalidAETitle("printable ASCII"),
    "NUL\x00": InvalidAETitle("printable ASCII"),
    "ÄRZTEHAUS": InvalidAETitle("printable ASCII"),
}


@pytest.mark.parametrize("text", CASES)
def test_ae_title(text: str) -> None:
    expected = CASES[text]
    if isinstance(expected, str):
        assert parse_ae_title(text) == expected
    else:
        with pytest.raises(InvalidAETitle, match=str(expected)):
            parse_ae_title(text)


REFUSED = [text for text, expected in CASES.items() if isinstance(expected, InvalidAETitle)]
