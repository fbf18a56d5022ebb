"""Media types and Accept parsing (RFC 9110 §8.3, §12.5.1; PS3.18 8.7)."""

import pytest

from dicomweb.media import InvalidMediaType, MediaRange, parse_accept, parse_content_type


@pytest.mark.parametrize(
    ("header", "boundary"),
    [
        ('multipart/related; type="application/dicom"; boundary=abc', "abc"),
        ('multipart/related;type=application/dicom;boundary="a b:c"', "a b:c"),
        (" multipart/related ;\ttype=application/dicom ;  boundary=abc  ", "abc"),
        ('Multipart/Related; TYPE="application/dicom"; Boundary="abc"', "abc"),
        ("multipart/related; type = application/dicom; boundary = abc", "abc"),
        (
            "multipart/related; boundary=----=_Part_0_1.2; type=application/dicom",
            "----=_Part_0_1.2",
        ),
        ("multipart/related;; type=application/dicom; boundary=abc;", "abc"),
    ],
)
def test_content_type_parameters_quoted_or_not(header, boundary):
    media = parse_content_type(header)
    assert media.essence == "multipart/related"
    assert media.param("type") == "application/dicom"
    assert media.param("BOUNDARY") == boundary
    assert media.q == 1.0


def test_content_type_keeps_value_case_and_lowercases_names():
    media = parse_content_type('Application/DICOM; Transfer-Syntax="1.2.840.10008.1.2.1"; X=AbC')
    assert (media.type, media.subtype, media.essence) == (
        "application",
        "dicom",
        "application/dicom",
    )
    assert media.params == {"transfer-syntax": "1.2.840.10008.1.2.1", "x": "AbC"}
    assert media.param("missing") is None


def test_quoted_pairs_are_unescaped():
    media = parse_content_type(r'text/plain; a="say \"hi\""; b="back\\slash"; c="\q; ,"')
    assert media.params == {"a": 'say "hi"', "b": "back\\slash", "c": "q; ,"}


def test_content_type_q_is_an_ordinary_parameter():
    media = parse_content_type("text/plain; q=0.5")
    assert (media.q, media.param("q")) == (1.0, "0.5")


@pytest.mark.parametrize(
    "header",
    [
        "",
        "   ",
        "multipart",
        "multipart/",
        "/related",
        "multi part/related",
        "application/dicom extra",
        "application/dicom; type",
        "application/dicom; type=",
        "application/dicom; =x",
        'application/dicom; type="unterminated',
        'application/dicom; type="trailing\\',
        'application/dicom; type="a"b',
        "application/dicom; boundary=a b",
        "application/dicom; x=1; X=2",
        'application/dicom; x="bell\x07"',
        "application/dicom; x=new\nline",
        "application/dicom, text/plain",
    ],
)
def test_garbage_content_type_is_rejected(header):
    with pytest.raises(InvalidMediaType) as info:
        parse_content_type(header)
    assert "position" in str(info.value)


@pytest.mark.parametrize("header", [None, "", "  \t "])
def test_missing_accept_means_anything(header):
    assert parse_accept(header) == [MediaRange("*", "*", {}, 1.0)]


def test_accept_is_ordered_by_weight_keeping_client_order_on_ties():
    ranges = parse_accept(
        "application/dicom+json;q=0.5, application/dicom, image/jpeg;q=0.9, */*;q=0.1,"
        " application/octet-stream"
    )
    assert [(media.essence, media.q) for media in ranges] == [
        ("application/dicom", 1.0),
        ("application/octet-stream", 1.0),
        ("image/jpeg", 0.9),
        ("application/dicom+json", 0.5),
        ("*/*", 0.1),
    ]


def test_zero_weight_is_dropped():
    ranges = parse_accept("application/dicom;q=0, image/*;q=0.000, text/plain;q=0.001")
    assert [(media.essence, media.q) for media in ranges] == [("text/plain", 0.001)]


def test_commas_inside_quotes_do_not_split():
    header = (
        'multipart/related; type="application/dicom"; transfer-syntax=*,'
        ' application/dicom+json;q=0.5, multipart/related; type="a, b;c"; q=0.2'
    )
    first, second, third = parse_accept(header)
    assert first.essence == "multipart/related"
    assert first.params == {"type": "application/dicom", "transfer-syntax": "*"}
    assert (second.essence, second.q, second.params) == ("application/dicom+json", 0.5, {})
    assert (third.param("type"), third.q) == ("a, b;c", 0.2)


def test_repeated_accept_headers_joined_by_commas():
    joined = ", ".join(["application/dicom; transfer-syntax=1.2.840.10008.1.2.1", "", "*/*;q=0.1"])
    ranges = parse_accept(joined)
    assert [media.essence for media in ranges] == ["application/dicom", "*/*"]
    assert ranges[0].param("transfer-syntax") == "1.2.840.10008.1.2.1"


def test_empty_list_elements_are_ignored():
    ranges = parse_accept(" , application/dicom,, ,image/jpeg , ")
    assert [media.essence for media in ranges] == ["application/dicom", "image/jpeg"]


def test_weight_is_taken_wherever_it_stands():
    (media,) = parse_accept('multipart/related; Q=0.7; type="image/jpeg"')
    assert (media.q, media.params) == (0.7, {"type": "image/jpeg"})


@pytest.mark.parametrize("header", ["*/*", "image/*", "*/*;q=1.000"])
def test_wildcards(header):
    (media,) = parse_accept(header)
    assert media.subtype == "*"
    assert media.q == 1.0


@pytest.mark.parametrize(
    "q", ["abc", "2", "1.5", "1.001", "0.1234", "-1", "", ".5", "0,5", "1e-1", '"0.5"x']
)
def test_invalid_weight_is_rejected(q):
    with pytest.raises(InvalidMediaType):
        parse_accept(f"application/dicom;q={q}")


@pytest.mark.parametrize(
    "header",
    [
        "*/json",
        "application/dicom image/jpeg",
        "application/dicom; q=0.5; q=0.7",
        "application",
        'application/dicom; type="open, text/plain',
    ],
)
def test_garbage_accept_is_rejected(header):
    with pytest.raises(InvalidMediaType):
        parse_accept(header)
