"""SMP serial framing and messages checked byte for byte against the ``smp`` package
(intercreate's reference encoder and decoder) and MCUboot's boot_serial.c rules."""

from __future__ import annotations

import base64

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from smp import packet

from drivers import smp as d

messages = st.binary(min_size=8, max_size=3000)


@given(messages)
def test_our_lines_are_the_smp_packages_lines(message: bytes) -> None:
    assert d.encode_frame(message) == list(packet.encode(message, line_length=128))


@given(messages, st.integers(7, 300))
def test_lines_decode_with_the_smp_package_and_fit(message: bytes, line_max: int) -> None:
    lines = d.encode_frame(message, line_max)
    assert all(len(line) <= line_max for line in lines)
    assert lines[0][:2] == b"\x06\x09" and all(x[:2] == b"\x04\x14" for x in lines[1:])
    assert all(line.endswith(b"\n") for line in lines)
    decoder = packet.decode()
    next(decoder)
    with pytest.raises(StopIteration) as stop:
        for line in lines:
            decoder.send(line)
    assert stop.value.value == message
    ours = d.FrameDecoder(limit=1 << 16)
    results = [ours.feed(line[:-1]) for line in lines]
    assert results[-1] == message and not any(results[:-1])
    assert sum(map(len, lines)) == d.frame_wire_size(len(message), line_max)


def test_frame_layout_is_length_message_crc() -> None:
    frame = base64.b64decode(d.encode_frame(b"\x02\x00\x00\x00\x00\x00\x01\x00")[0][2:-1])
    assert frame[:2] == (10).to_bytes(2, "big")  # message + CRC
    assert frame[2:10] == b"\x02\x00\x00\x00\x00\x00\x01\x00"
    assert int.from_bytes(frame[10:], "big") == d.crc16_xmodem(frame[2:10])


@given(messages, st.integers(0, 2999), st.integers(1, 255))
def test_a_corrupted_frame_is_refused(message: bytes, at: int, flip: int) -> None:
    frame = bytearray(len(message).to_bytes(2, "big") + b"")
    raw = bytearray(base64.b64decode(b"".join(x[2:-1] for x in d.encode_frame(message))))
    raw[2 + at % len(message)] ^= flip
    del frame
    text = base64.b64encode(bytes(raw))
    decoder = d.FrameDecoder(limit=1 << 16)
    with pytest.raises(d.FrameError):
        decoder.feed(b"\x06\x09" + text)


def test_receive_limit_drops_oversized_frames() -> None:
    lines = d.encode_frame(b"\x02\x00" + b"\x00" * 1100)
    decoder = d.FrameDecoder(limit=1024)
    with pytest.raises(d.FrameError, match="receive buffer"):
        for line in lines:
            decoder.feed(line[:-1])


def test_upload_request_keys_as_mcuboot_reads_them() -> None:
    msg = d.upload_request(0, b"abc", total=10, sha=b"\x11" * 32, image=2, sequence=9)
    hdr, body = d.split_message(msg)
    assert (hdr.op, hdr.group, hdr.command, hdr.sequence) == (2, 1, 1, 9)
    assert body == {"off": 0, "data": b"abc", "len": 10, "sha": b"\x11" * 32, "image": 2}
    later = d.split_message(d.upload_request(8, b"x", total=10, sha=b"\x11" * 32))[1]
    assert later == {"off": 8, "data": b"x"}  # len, sha, image only on the first chunk


@given(st.integers(64, 8192), st.integers(1, 1 << 20), st.sampled_from([1, 4, 8, 16]))
def test_chunk_size_fills_the_buffer(receive: int, total: int, align: int) -> None:
    try:
        n = d.chunk_size(receive, total, align=align)
    except ValueError:
        return
    assert n % align == 0
    for off, first in ((0, True), (total, False)):
        kw = {"total": total, "sha": b"\0" * 32} if first else {}
        size = len(d.upload_request(off, b"\0" * n, **kw))  # type: ignore[arg-type]
        assert size + 4 <= receive
    bigger = len(d.upload_request(0, b"\0" * (n + align), total=total, sha=b"\0" * 32))
    later = len(d.upload_request(total, b"\0" * (n + align)))
    assert max(bigger, later) + 4 > receive  # one more aligned step would not fit


def test_error_answers_raise() -> None:
    with pytest.raises(d.SmpError) as exc:
        d.check_rc({"rc": 3}, "upload")
    assert exc.value.rc == 3 and "EINVAL" in exc.value.message
    with pytest.raises(d.SmpError):
        d.check_rc(cbor2.loads(cbor2.dumps({"err": {"group": 1, "rc": 2}})), "x")
    d.check_rc({"rc": 0, "off": 5}, "upload")
