"""The output log record file both runtimes write: each stream's bytes come back exactly, a
record per line, and a capture resuming after a restart adds each line once."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from iris.runtime.output_log import MAX_LINE_BYTES, STDERR, STDOUT, LineWriter, OutputLog, encode, parse_record, records

# chunks a task writes: (stream, bytes), with newlines common and a long line now and then
chunks = st.lists(
    st.tuples(
        st.sampled_from([STDOUT, STDERR]),
        st.one_of(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"\n")), st.just(b"y" * (MAX_LINE_BYTES + 3))),
    ),
    max_size=30,
)


def _streams(log: OutputLog) -> dict[str, bytes]:
    """Each stream's bytes rebuilt from the records."""
    out = {STDOUT: b"", STDERR: b""}
    for record in log.read(0, log.size()).split(b"\n")[:-1]:
        stream, content, complete = parse_record(record)
        assert len(content) <= MAX_LINE_BYTES and b"\n" not in content
        out[stream] += content + (b"\n" if complete else b"")
    return out


@settings(max_examples=60, deadline=None)
@given(chunks, st.integers(min_value=0, max_value=30))
def test_output_log_each_stream_comes_back_exactly_and_a_resumed_capture_adds_each_line_once(
    tmp_path_factory, written: list[tuple[str, bytes]], cut: int
) -> None:
    directory = Path(tmp_path_factory.mktemp("log"))
    expected = {STDOUT: b"", STDERR: b""}
    for stream, data in written:
        expected[stream] += data
    whole = OutputLog(directory / "whole.log")
    writer = LineWriter(whole)
    for stream, data in written:
        writer.write(stream, data)
    writer.close()
    assert _streams(whole) == expected
    assert whole.captured() == {STDOUT: len(expected[STDOUT]), STDERR: len(expected[STDERR]), "env": 0}
    # a capture that stops after `cut` chunks (its unfinished lines lost with it), then a new one
    # that replays every stream from its start, as the docker runtime does after a restart
    resumed = OutputLog(directory / "resumed.log")
    first = LineWriter(resumed)
    for stream, data in written[:cut]:
        first.write(stream, data)
    second = LineWriter(resumed, skip=resumed.captured())
    for stream, data in written:
        second.write(stream, data)
    second.close()
    assert _streams(resumed) == expected


def test_output_log_record_format_and_bytes_of_another_kind() -> None:
    assert encode(STDOUT, b"hi") == b"o  hi\n"
    assert encode(STDERR, b"part", complete=False) == b"e+ part\n"
    assert parse_record(b"e  oops") == (STDERR, b"oops", True)
    assert parse_record(b"v  building") == ("env", b"building", True)
    assert parse_record(b"plain text") == (STDOUT, b"plain text", True)  # not a record: a line of stdout
    assert parse_record(b"") == (STDOUT, b"", True)


@given(st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"\n")), st.booleans(), st.sampled_from([STDOUT, STDERR]))
def test_output_log_records_hold_exactly_the_bytes_they_say(data: bytes, final: bool, stream: str) -> None:
    out, used = records(stream, data, final)
    rebuilt = b""
    for record in out.split(b"\n")[:-1]:
        s, content, complete = parse_record(record)
        assert s == stream
        rebuilt += content + (b"\n" if complete else b"")
    assert rebuilt == data[:used]
    assert used == len(data) if final else data[used:].find(b"\n") == -1
