"""multipart/related framing and spooled reading (RFC 2046 §5.1; PS3.18 10.4, 10.5)."""

import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomweb.media import parse_content_type
from dicomweb.multipart import (
    MalformedMultipart,
    ReceivedPart,
    RelatedPartsReader,
    iter_multipart_related,
    multipart_closing,
    multipart_length,
    multipart_part_header,
    new_boundary,
)

LONGEST_BOUNDARY = ("'()+_,-./:=? 0aZ" * 5)[:69] + "z"  # every bchar class, 70 long
UUID_BOUNDARY = "f81d4fae7dec11d0a76500a0c91e6bf6"  # what new_boundary() makes


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    directory = tmp_path / "spool"
    directory.mkdir()
    return directory


def chunked(body: bytes, size: int) -> Iterator[bytes]:
    return (body[offset : offset + size] for offset in range(0, len(body), size))


def read_body(
    body: bytes, boundary: str, spool: Path, chunk_size: int = 65536, **options: int
) -> tuple[list[ReceivedPart], RelatedPartsReader]:
    reader = RelatedPartsReader(boundary.encode("latin-1"), spool, **options)
    parts: list[ReceivedPart] = []
    for chunk in chunked(body, chunk_size):
        parts += reader.feed(chunk)
    parts += reader.close()
    return parts, reader


def frame(parts: list[tuple[str, bytes]], boundary: str) -> bytes:
    return b"".join(iter_multipart_related([(kind, [data]) for kind, data in parts], boundary))


def tricky_data(rng: random.Random, boundary: str) -> bytes:
    """Random bytes salted with near-delimiters: legal data, since none is CRLF "--" boundary."""
    b = boundary.encode()
    lures = [
        b"--" + b,
        b"--" + b + b"\r\n",
        b"--" + b + b"--\r\n",
        b"\r\n",
        b"\r",
        b"\n",
        b"\r\n-",
        b"\r\n--",
        b"\r\r\n--",
        *(b"\r\n--" + b[:cut] for cut in range(len(b))),
    ]
    pieces = [
        rng.choice(lures) if rng.random() < 0.5 else rng.randbytes(rng.randrange(20))
        for _ in range(rng.randrange(40))
    ]
    data = b"".join(pieces)
    delimiter = b"\r\n--" + b
    while delimiter in data:  # joined lures can spell a real delimiter; break those up
        data = data.replace(delimiter, b"\r\n-")
    return data


def spooled(spool: Path) -> list[Path]:
    return sorted(spool.iterdir())


@pytest.mark.parametrize("chunk_size", [1, 7, 65536])
@pytest.mark.parametrize(
    "boundary", [UUID_BOUNDARY, "a b:c", "x", pytest.param(LONGEST_BOUNDARY, id="longest")]
)
def test_round_trip_of_random_binary_parts(spool, boundary, chunk_size):
    rng = random.Random(f"{boundary}/{chunk_size}")
    sent = [("application/dicom", tricky_data(rng, boundary)) for _ in range(6)]
    sent += [("application/octet-stream", b""), ("text/plain", b"\r\n"), ("x/y", b"--")]
    sent += [("application/dicom", b"--" + boundary.encode() + b"\r\n" + rng.randbytes(300))]
    rng.shuffle(sent)
    body = frame(sent, boundary)
    assert len(body) == multipart_length([(kind, len(data)) for kind, data in sent], boundary)

    received, reader = read_body(body, boundary, spool, chunk_size)

    assert [(part.content_type, part.path.read_bytes()) for part in received] == sent
    assert all(part.complete and not part.too_large for part in received)
    assert [part.size for part in received] == [len(data) for _, data in sent]
    assert not reader.truncated
    assert spooled(spool) == sorted(part.path for part in received)
    assert all(part.path.name.startswith(".part-") for part in received)


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/related; type="application/dicom"; boundary="a b:c"',
        "multipart/related;type=application/dicom;boundary=a_b.c",
    ],
)
def test_boundary_from_quoted_or_unquoted_content_type(spool, content_type):
    boundary = parse_content_type(content_type).param("boundary")
    assert boundary is not None
    body = frame([("application/dicom", b"DICM"), ("application/dicom", b"")], boundary)
    received, _ = read_body(body, boundary, spool, 3)
    assert [part.path.read_bytes() for part in received] == [b"DICM", b""]


def test_preamble_epilogue_and_transport_padding_are_ignored(spool):
    body = (
        b"This is a preamble, --b but no delimiter.\r\n--b \t\r\n"
        b"Content-Type: application/dicom\r\n\r\nfirst"
        b"\r\n--b\t\r\n\r\nsecond"
        b"\r\n--b--  \r\nepilogue\r\n--b\r\nContent-Type: x/y\r\n\r\nignored"
    )
    for chunk_size in (1, 5, len(body)):
        received, reader = read_body(body, "b", spool, chunk_size)
        assert [part.path.read_bytes() for part in received] == [b"first", b"second"]
        assert [part.content_type for part in received] == ["application/dicom", None]
        assert not reader.truncated


def test_part_headers_are_lowercased_trimmed_and_joined(spool):
    body = (
        b"--b\r\nCONTENT-TYPE:application/dicom  \r\nContent-Location: /studies/1\r\n"
        b"X-Note: one\r\nx-note:  two\r\nX-Empty:\r\n\r\n\r\n--b--"
    )
    (part,), _ = read_body(body, "b", spool, 2)
    assert part.headers == {
        "content-type": "application/dicom",
        "content-location": "/studies/1",
        "x-note": "one, two",
        "x-empty": "",
    }
    assert part.content_type == "application/dicom"


def test_missing_close_delimiter_leaves_last_part_incomplete(spool):
    body = frame([("application/dicom", b"one"), ("application/dicom", b"two")], "b")
    body = body.removesuffix(multipart_closing("b"))
    for chunk_size in (1, 7, 65536):
        received, reader = read_body(body, "b", spool, chunk_size)
        assert [(part.path.read_bytes(), part.complete) for part in received] == [
            (b"one", True),
            (b"two", False),
        ]
        assert reader.truncated


@pytest.mark.parametrize(
    ("cut_after", "expected"),
    [
        (b"half of pa", [(b"part one", True), (b"half of pa", False)]),
        (b"part one\r\n--b", [(b"part one", False)]),
        (b"part one\r\n--b\r\nContent-Ty", [(b"part one", True), (b"", False)]),
    ],
)
def test_body_cut_mid_part(spool, cut_after, expected):
    body = frame([("application/dicom", b"part one"), ("text/plain", b"half of part two")], "b")
    body = body[: body.index(cut_after) + len(cut_after)]
    received, reader = read_body(body, "b", spool, 4)
    assert [(part.path.read_bytes(), part.complete) for part in received] == expected
    assert reader.truncated
    assert spooled(spool) == sorted(part.path for part in received)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n\r\n",
        b"just some text, no multipart here",
        b"--other\r\n\r\ndata\r\n--other--\r\n",
        b"--bx\r\n\r\n",
        random.Random(4).randbytes(100_000).replace(b"--b", b""),
    ],
)
def test_body_without_boundary_is_malformed(spool, body):
    reader = RelatedPartsReader(b"b", spool)
    for chunk in chunked(body, 1000):
        assert reader.feed(chunk) == []
    with pytest.raises(MalformedMultipart, match="no multipart boundary"):
        reader.close()
    assert spooled(spool) == []


@pytest.mark.parametrize(
    "body",
    [
        b"--b\r\nContent-Type application/dicom\r\n\r\ndata\r\n--b--\r\n",
        b"--b\r\nX-Flag\r\n\r\ndata\r\n--b--\r\n",
        b"--b\r\n: no name\r\n\r\ndata\r\n--b--\r\n",
        b"--b\r\nContent-Type: a/b\r\n  folded\r\n\r\ndata\r\n--b--\r\n",
        b"--b\r\nContent-Type: a/b\r\n\r\none\r\n--b\r\n\x00\x01\x02\xff\r\n\r\n",
        b"--b\r\nContent-Type: a/b\rX: y\r\n\r\n",
        b"--b\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(40)) + b"\r\n",
        b"--b\r\nX: " + b"v" * 10_000 + b"\r\n\r\n",
        b"--b\r\n\r\none\r\n--b junk\r\n",
    ],
)
def test_malformed_headers_are_rejected_and_leave_no_files(spool, body):
    reader = RelatedPartsReader(b"b", spool)
    with pytest.raises(MalformedMultipart, match="malformed multipart/related body"):
        reader.feed(body)
    assert spooled(spool) == []
    with pytest.raises(RuntimeError):
        reader.feed(b"more")


def test_oversized_part_is_emptied_and_reading_goes_on(spool):
    sent = [("a/b", b"x" * 10), ("a/b", b"y" * 100), ("a/b", b"z" * 50), ("a/b", b"w" * 51)]
    received, reader = read_body(frame(sent, "b"), "b", spool, 7, max_part_bytes=50)
    assert [(part.size, part.too_large, part.complete) for part in received] == [
        (10, False, True),
        (100, True, True),
        (50, False, True),
        (51, True, True),
    ]
    assert [part.path.read_bytes() for part in received] == [b"x" * 10, b"", b"z" * 50, b""]
    assert not reader.truncated


def test_discard_deletes_only_parts_not_handed_out(spool):
    body = frame([("a/b", b"kept by the caller"), ("a/b", b"x" * 1000)], "b")
    reader = RelatedPartsReader(b"b", spool)
    handed_out = reader.feed(body[: body.index(b"x" * 500)])
    assert len(handed_out) == 1
    assert len(spooled(spool)) == 2
    reader.discard()
    assert spooled(spool) == [handed_out[0].path]
    with pytest.raises(RuntimeError):
        reader.close()


def test_context_manager_cleans_up_after_a_disconnect(spool):
    body = frame([("a/b", b"one"), ("a/b", b"two"), ("a/b", b"x" * 100)], "b")
    handed_out: list[ReceivedPart] = []
    with pytest.raises(ConnectionError), RelatedPartsReader(b"b", spool) as reader:
        handed_out += reader.feed(body[:-60])
        raise ConnectionError("client went away")
    assert [part.path.read_bytes() for part in handed_out] == [b"one", b"two"]
    assert spooled(spool) == sorted(part.path for part in handed_out)


def test_parts_completed_by_a_failing_chunk_are_deleted(spool):
    body = b"--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b\r\nno colon\r\n\r\n"
    with pytest.raises(MalformedMultipart), RelatedPartsReader(b"b", spool) as reader:
        reader.feed(body)
    assert spooled(spool) == []


def test_empty_multipart_body_has_no_parts(spool):
    received, reader = read_body(b"--b--\r\n", "b", spool, 1)
    assert received == []
    assert not reader.truncated


@pytest.mark.parametrize("boundary", [b"", b"x" * 71, b"a\r\nb", b"a\nb"])
def test_unusable_reader_boundary(spool, boundary):
    with pytest.raises(MalformedMultipart):
        RelatedPartsReader(boundary, spool)


def test_large_body_streams_in_bounded_memory(spool):
    mebibyte = 1 << 20
    payload = random.Random(200).randbytes(mebibyte)  # one buffer, yielded over and over
    boundary = new_boundary()
    body = iter_multipart_related([("application/dicom", [payload] * 50)] * 4, boundary)

    total = 0
    received: list[ReceivedPart] = []
    tracemalloc.start()
    try:
        with RelatedPartsReader(boundary.encode(), spool) as reader:
            for chunk in body:
                total += len(chunk)
                received += reader.feed(chunk)
            received += reader.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert total > 200 * mebibyte
    assert peak < 8 * mebibyte
    assert [part.size for part in received] == [50 * mebibyte] * 4
    assert all(part.path.stat().st_size == 50 * mebibyte for part in received)


def _outcome(body: bytes, spool: Path, pieces: list[bytes]) -> object:
    """What reading `body` in these pieces gives: the parts (bytes, completeness), or the error."""
    reader = RelatedPartsReader(b"bnd", spool)
    parts: list[ReceivedPart] = []
    try:
        for piece in pieces:
            parts += reader.feed(piece)
        parts += reader.close()
    except MalformedMultipart as error:
        return type(error).__name__
    found = [(part.path.read_bytes(), part.complete) for part in parts]
    for part in parts:
        part.path.unlink()
    return found, reader.truncated


@pytest.mark.parametrize(
    "body",
    [
        b"--bnd\r\n\r\nfirst\r\n--bnd  \r\nX-A: 1\r\n\r\nsecond\r\n--bnd--\r\n",
        b"pre --bnd\r\n--bndx\r\n\r\n--bnd\r\n\r\ndata\r\n-\r\n--b\r\n--bnd--",
        b"--bnd\r\n\r\n\r\n\r\r\n--bn\r\n--bnd-\r\n--bnd--",
        b"--bnd\r\n\r\ndata\r\n--bnd-",
        b"--bnd\r\n\r\ndata\r\n--bnd\r",
        b"--bnd\r\n\r\ndata\r\n--bnd\rX\r\n",
        b"--bnd\r\n\r\ndata\r\n--bnd-x\r\n",
        b"--bnd\r\n\r\ndata\r\n--bnd \t x\r\n",
        b"--bnd\r\nA: b\r\nC d: e\r\n\r\n",
    ],
)
def test_every_split_of_the_body_reads_alike(spool, body):
    """The delimiter search holds back what could begin a delimiter: wherever a chunk ends,
    the parts, their completeness, truncation and refusals are those of the whole body."""
    whole = _outcome(body, spool, [body])
    for cut in range(len(body) + 1):
        assert _outcome(body, spool, [body[:cut], body[cut:]]) == whole, cut
    assert _outcome(body, spool, list(chunked(body, 1))) == whole
    assert spooled(spool) == []


def test_framing_is_exact():
    body = b"".join(
        iter_multipart_related(
            [("application/dicom", [b"AB", b"", b"C"]), ("text/plain", [])], "xyz"
        )
    )
    assert body == (
        b"--xyz\r\nContent-Type: application/dicom\r\n\r\nABC"
        b"\r\n--xyz\r\nContent-Type: text/plain\r\n\r\n"
        b"\r\n--xyz--\r\n"
    )


def test_part_header_with_extra_headers():
    header = multipart_part_header("b", "application/dicom", {"Content-Location": "/studies/1"})
    assert (
        header == b"--b\r\nContent-Type: application/dicom\r\nContent-Location: /studies/1\r\n\r\n"
    )


@pytest.mark.parametrize(
    "boundary", [UUID_BOUNDARY, "b", pytest.param(LONGEST_BOUNDARY, id="longest")]
)
def test_length_matches_the_framed_stream(boundary):
    rng = random.Random(boundary)
    for part_count in range(5):
        sizes = [
            (rng.choice(["application/dicom", "image/jpeg"]), rng.randrange(5000))
            for _ in range(part_count)
        ]
        stream = iter_multipart_related([(kind, [bytes(size)]) for kind, size in sizes], boundary)
        assert len(b"".join(stream)) == multipart_length(sizes, boundary)


@pytest.mark.parametrize(
    "boundary", ["", "x" * 71, "trailing ", "semi;colon", 'quote"', "crlf\r\n", "é"]
)
def test_writer_refuses_invalid_boundaries(boundary):
    with pytest.raises(ValueError, match="boundary"):
        iter_multipart_related([("a/b", [b""])], boundary)
    with pytest.raises(ValueError, match="boundary"):
        multipart_length([("a/b", 0)], boundary)


@pytest.mark.parametrize(
    ("content_type", "extra"),
    [
        ("application/dicom\r\nX-Injected: 1", None),
        ("application/dicom", {"X-Bad": "line\nbreak"}),
        ("application/dicom", {"Bad Name": "v"}),
        ("application/dicom", {"content-type": "text/plain"}),
        ("application/dicom", {"X-Latin": "café"}),
    ],
)
def test_writer_refuses_unsafe_headers(content_type, extra):
    with pytest.raises(ValueError):
        multipart_part_header("b", content_type, extra)


def test_new_boundaries_are_fresh_and_valid():
    boundaries = {new_boundary() for _ in range(100)}
    assert len(boundaries) == 100
    for boundary in boundaries:
        assert multipart_closing(boundary) == f"\r\n--{boundary}--\r\n".encode()
