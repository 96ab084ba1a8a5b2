"""SMP (MCUmgr) over a serial line, as MCUboot's serial recovery speaks it.

Framing (MCUboot ``boot_serial.c`` ``boot_serial_output``/``boot_serial_in_dec``; the
``smp`` package's ``smp/packet.py``): a frame is ``len`` (u16 BE, message + 2) ‖ the SMP
message (8-byte header, then a CBOR map) ‖ CRC16-XMODEM of the message (u16 BE); the
frame is base64-encoded and cut into lines of at most :data:`LINE_MAX` bytes, the first
starting ``06 09``, each further one ``04 14``, every one ending ``\\n``.

Requests are built with the ``smp`` package's message models (canonical CBOR through
``cbor2``); answers are read with ``cbor2``. MCUboot answers an error as ``{"rc": N}``
(SMP version 1); SMP version 2 servers as ``{"err": {"group", "rc"}}``: both are raised as
:class:`SmpError`.

The upload follows the offset the server answers with, so a lost or repeated chunk, or an
upload interrupted and started again at a later offset, carries on from where the server
is. MCUboot does not say how large a frame it can take: :func:`chunk_size` sizes chunks
from the receive buffer size the hub profile gives.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import cbor2
from smp import header as smphdr
from smp import image_management as img
from smp import os_management as osm
from smp.error import MGMT_ERR

from drivers.crc import crc16_xmodem
from drivers.errors import DeviceTimeout, ProtocolError
from drivers.types import Phase, ProgressFn, no_progress

START = b"\x06\x09"
CONTINUE = b"\x04\x14"
#: Longest line a server keeps (MCUboot ``BOOT_MAX_LINE_INPUT_LEN``), newline included.
LINE_MAX = 128
#: MCUboot's default reassembly buffer (``BOOT_SERIAL_MAX_RECEIVE_SIZE``).
RECEIVE_SIZE = 1024
_LEN = struct.Struct(">H")
_HDR = struct.Struct(">BBHHBB")
HEADER_SIZE = _HDR.size

GROUP_OS = int(smphdr.GroupId.OS_MANAGEMENT)
GROUP_IMAGE = int(smphdr.GroupId.IMAGE_MANAGEMENT)
CMD_ECHO = int(smphdr.CommandId.OSManagement.ECHO)
CMD_RESET = int(smphdr.CommandId.OSManagement.RESET)
CMD_STATE = int(smphdr.CommandId.ImageManagement.STATE)
CMD_UPLOAD = int(smphdr.CommandId.ImageManagement.UPLOAD)
#: MGMT_ERR names (Zephyr ``mgmt_defines.h``; the ``smp`` package's ``MGMT_ERR``).
RC_NAMES = {int(e): e.name for e in MGMT_ERR}
RC_EINVAL = 3
RC_ENOTSUP = 8


class FrameError(ProtocolError):
    """Bytes that are not a well-formed SMP serial frame."""


class SmpError(ProtocolError):
    """The server answered a request with an error code.

    Attributes:
        rc: the MGMT_ERR code (or a group's own code, for SMP version 2 errors).
        group: the group the code belongs to (0 for MGMT_ERR).
    """

    def __init__(self, message: str, *, rc: int, group: int = 0, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.rc = rc
        self.group = group


def rc_text(rc: int) -> str:
    """``3 (EINVAL)``."""
    name = RC_NAMES.get(rc)
    return f"{rc} ({name})" if name else str(rc)


# --- framing ---------------------------------------------------------------------------


def line_payload(line_max: int = LINE_MAX) -> int:
    """Base64 characters one line carries: a multiple of 4, so each line decodes alone,
    leaving room for the 2-byte marker and the newline (124 for 128-byte lines)."""
    return (line_max - 3) // 4 * 4


def encode_frame(message: bytes, line_max: int = LINE_MAX) -> list[bytes]:
    """The lines that carry ``message`` (an SMP header and its CBOR body)."""
    if line_max < 7:
        raise ValueError(f"a line of {line_max} bytes cannot carry base64")
    frame = _LEN.pack(len(message) + 2) + message + _LEN.pack(crc16_xmodem(message))
    text = base64.b64encode(frame)
    step = line_payload(line_max)
    return [
        (START if i == 0 else CONTINUE) + text[i : i + step] + b"\n"
        for i in range(0, len(text), step)
    ]


def frame_wire_size(message_size: int, line_max: int = LINE_MAX) -> int:
    """Bytes on the wire for a message of ``message_size`` bytes."""
    text = 4 * -(-(message_size + 4) // 3)
    lines = -(-text // line_payload(line_max))
    return text + 3 * lines


class FrameDecoder:
    """Reassembles frames from lines, as MCUboot's receiver does: a start line begins a
    frame, continuation lines extend it, the frame is complete when its length says so.

    ``limit`` caps the decoded bytes (length, message and CRC), as MCUboot's buffer does:
    a frame that would exceed it raises :class:`FrameError` and is dropped.
    """

    def __init__(self, limit: int = RECEIVE_SIZE) -> None:
        self.limit = limit
        self._buf: bytearray | None = None

    def reset(self) -> None:
        self._buf = None

    def feed(self, line: bytes) -> bytes | None:
        """One line without its newline; the message once a frame is complete."""
        marker, text = line[:2], line[2:]
        if marker == START:
            self._buf = bytearray()
        elif marker != CONTINUE or self._buf is None:
            return None  # not SMP (console text), or a continuation without a start
        buf = self._buf
        try:
            chunk = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            self._buf = None
            raise FrameError(f"a frame line is not base64: {exc}") from exc
        if len(buf) + len(chunk) > self.limit:
            self._buf = None
            raise FrameError(
                f"a frame of more than {self.limit} bytes (the receive buffer) was dropped"
            )
        buf += chunk
        if len(buf) < 2:
            return None
        (length,) = _LEN.unpack_from(buf)
        if len(buf) - 2 < length:
            return None
        self._buf = None
        if len(buf) - 2 > length or length <= 2:
            raise FrameError(f"a frame holds {len(buf) - 2} bytes, its length says {length}")
        body = bytes(buf[2:])
        if crc16_xmodem(body) != 0:  # CRC over message ‖ CRC is zero when intact
            raise FrameError("a frame's CRC16 does not match")
        return body[:-2]


# --- messages --------------------------------------------------------------------------


@dataclass(frozen=True)
class SmpHeader:
    op: int
    version: int
    flags: int
    length: int
    group: int
    sequence: int
    command: int

    @classmethod
    def unpack(cls, data: bytes) -> SmpHeader:
        if len(data) < HEADER_SIZE:
            raise FrameError(f"an SMP message of {len(data)} bytes has no 8-byte header")
        b0, flags, length, group, seq, cmd = _HDR.unpack_from(data)
        return cls(b0 & 7, (b0 >> 3) & 3, flags, length, group, seq, cmd)

    def pack(self) -> bytes:
        b0 = (self.op & 7) | (self.version & 3) << 3
        return _HDR.pack(b0, self.flags, self.length, self.group, self.sequence, self.command)


def split_message(message: bytes) -> tuple[SmpHeader, dict[Any, Any]]:
    """An SMP message's header and CBOR map.

    Raises:
        FrameError: no header, a body that is not one CBOR map, or lengths that disagree.
    """
    hdr = SmpHeader.unpack(message)
    body = message[HEADER_SIZE:]
    if hdr.length != len(body):
        raise FrameError(f"SMP header says {hdr.length} body bytes; {len(body)} came")
    try:
        value = cbor2.loads(body) if body else {}
    except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
        raise FrameError(f"an SMP body is not CBOR: {exc}") from exc
    if not isinstance(value, dict):
        raise FrameError(f"an SMP body is a CBOR {type(value).__name__}, not a map")
    return hdr, value


@dataclass(frozen=True)
class SlotState:
    """One slot as image state read lists it (MCUboot lists valid images only)."""

    slot: int
    version: str
    image: int = 0
    hash: bytes | None = None
    flags: frozenset[str] = frozenset()


def _slot(entry: object) -> SlotState:
    if not isinstance(entry, dict):
        raise ProtocolError(f"an image state entry is not a map: {entry!r}")
    slot, version = entry.get("slot"), entry.get("version")
    if not isinstance(slot, int) or not isinstance(version, str):
        raise ProtocolError(f"an image state entry lacks slot or version: {entry!r}")
    digest = entry.get("hash")
    image = entry.get("image", 0)
    flags = frozenset(
        k
        for k in ("bootable", "pending", "confirmed", "active", "permanent")
        if entry.get(k) is True
    )
    return SlotState(
        slot,
        version,
        image if isinstance(image, int) else 0,
        digest if isinstance(digest, bytes) else None,
        flags,
    )


@dataclass
class UploadReport:
    """How an upload went: bytes sent (retries included), chunks, follows of the server's
    offset that were not simply the next chunk (a resume or a repeat)."""

    size: int
    chunk: int
    sent: int = 0
    requests: int = 0
    retries: int = 0
    jumps: list[tuple[int, int]] = field(default_factory=list)  # (expected, server's off)
    match: bool | None = None
    seconds: float = 0.0


class LineLink(Protocol):
    """What the driver needs of a serial link."""

    url: str

    def write(self, data: bytes) -> None: ...

    def read_line(self, timeout_s: float) -> bytes | None: ...


def upload_request(
    off: int,
    data: bytes,
    *,
    total: int | None = None,
    sha: bytes | None = None,
    image: int | None = None,
    upgrade: bool | None = None,
    sequence: int = 0,
) -> bytes:
    """The SMP message of one image upload chunk (group 1, command 1)."""
    fields: dict[str, Any] = {"off": off, "data": data}
    if off == 0:
        fields.update(
            {k: v for k, v in (("len", total), ("sha", sha), ("image", image)) if v is not None}
        )
        if upgrade is not None:
            fields["upgrade"] = upgrade
    return bytes(img.ImageUploadWriteRequest(sequence=sequence, **fields))


def chunk_size(
    receive_size: int,
    total: int,
    *,
    align: int = 8,
    sha: bool = True,
    image: int | None = None,
    upgrade: bool | None = None,
) -> int:
    """The largest chunk (a multiple of ``align``) whose first-chunk frame fits a server
    buffer of ``receive_size`` bytes (length, message and CRC), the offset of the last
    chunk included: the chunk that gets closest to what the server takes in one frame.

    Raises:
        ValueError: the buffer cannot take even one aligned chunk.
    """
    budget = receive_size - 4
    worst_off = max(total, 1)  # the largest offset a chunk is sent at is below this

    def message(n: int, off: int, first: bool) -> int:
        kw: dict[str, Any] = {}
        if first:
            kw = {"total": total, "sha": b"\0" * 32 if sha else None, "image": image}
            kw["upgrade"] = upgrade
        return len(upload_request(off, b"\0" * n, **kw))

    n = budget
    while n > 0:
        if message(n, 0, True) <= budget and message(n, worst_off, False) <= budget:
            break
        n -= 1
    n -= n % align
    if n <= 0:
        raise ValueError(f"a receive buffer of {receive_size} bytes takes no upload chunk")
    return n


class SmpClient:
    """SMP requests over a line link, one outstanding at a time.

    Each request is sent up to ``tries`` times when no answer comes within the timeout; an
    answer whose sequence number is not the request's (a late answer to an earlier try) is
    skipped.
    """

    def __init__(
        self,
        link: LineLink,
        *,
        receive_size: int = RECEIVE_SIZE,
        line_max: int = LINE_MAX,
        answer_timeout_s: float = 1.0,
        tries: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.link = link
        self.receive_size = receive_size
        self.line_max = line_max
        self.answer_timeout_s = answer_timeout_s
        self.tries = max(1, tries)
        self.clock = clock
        self.notes: list[str] = []
        self._seq = 0
        self._decoder = FrameDecoder(limit=1 << 16)  # answers: as large as the server sends
        self.sent_bytes = 0
        #: The offset the server last answered to an upload chunk (None: none yet).
        self.last_offset: int | None = None
        #: Answers received so far (any request).
        self.answered = 0

    # -- requests ------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def send_message(self, message: bytes) -> None:
        """Frame and send one SMP message."""
        lines = encode_frame(message, self.line_max)
        wire = b"".join(lines)
        self.sent_bytes += len(wire)
        self.link.write(wire)

    def _await(self, seq: int, group: int, cmd: int, timeout_s: float) -> dict[Any, Any] | None:
        deadline = self.clock() + timeout_s
        while (left := deadline - self.clock()) > 0:
            line = self.link.read_line(left)
            if line is None:
                return None
            try:
                message = self._decoder.feed(line)
            except FrameError:
                continue  # a garbled answer: as if none came; the request is sent again
            if message is None:
                continue
            hdr, body = split_message(message)
            if hdr.sequence != seq or hdr.group != group or hdr.command != cmd:
                continue
            if hdr.op not in (smphdr.OP.READ_RSP, smphdr.OP.WRITE_RSP):
                raise ProtocolError(f"an answer with SMP op {hdr.op}", port=self.link.url)
            return body
        return None

    def request(
        self,
        build: Callable[[int], bytes],
        what: str,
        *,
        timeout_s: float | None = None,
        phase: Phase | None = None,
    ) -> dict[Any, Any]:
        """Send the message ``build(sequence)`` and return the answer's CBOR map.

        Raises:
            DeviceTimeout: no answer after every try.
            SmpError: the answer is an error code.
        """
        wait = self.answer_timeout_s if timeout_s is None else timeout_s
        for attempt in range(1, self.tries + 1):
            seq = self._next_seq()
            message = build(seq)
            hdr = SmpHeader.unpack(message)
            self._decoder.reset()
            self.send_message(message)
            body = self._await(seq, hdr.group, hdr.command, wait)
            if body is None:
                if attempt < self.tries:
                    self.notes.append(f"no answer to {what} within {wait:g} s; sent it again")
                continue
            self.answered += 1
            check_rc(body, what, port=self.link.url, phase=phase)
            return body
        raise DeviceTimeout(
            f"no answer to {what} after {self.tries} tries of {wait:g} s",
            port=self.link.url,
            phase=phase,
        )

    # -- commands ------------------------------------------------------------------------

    def echo(self, text: str = "chub", *, timeout_s: float | None = None, tries: int = 0) -> str:
        """OS group echo: the server's ``r`` for our ``d``."""
        saved = self.tries
        if tries:
            self.tries = tries
        try:
            body = self.request(
                lambda s: bytes(osm.EchoWriteRequest(d=text, sequence=s)),
                "echo",
                timeout_s=timeout_s,
                phase=Phase.CONNECT,
            )
        finally:
            self.tries = saved
        answer = body.get("r")
        if not isinstance(answer, str):
            raise ProtocolError(f"echo answer has no text: {body!r}", port=self.link.url)
        return answer

    def image_state(self) -> list[SlotState]:
        """Image state read: the slots holding valid images, their versions and hashes."""
        body = self.request(
            lambda s: bytes(img.ImageStatesReadRequest(sequence=s)), "image state read"
        )
        images = body.get("images")
        if not isinstance(images, list):
            raise ProtocolError(f"image state answer has no image list: {body!r}")
        return [_slot(e) for e in images]

    def reset(self) -> None:
        """OS group reset: the server answers, then reboots (MCUboot after about 250 ms)."""
        self.request(lambda s: bytes(osm.ResetWriteRequest(sequence=s)), "reset", phase=Phase.BOOT)

    def upload(
        self,
        data: bytes,
        *,
        chunk: int,
        image: int | None = None,
        upgrade: bool | None = None,
        start_at: int = 0,
        first_timeout_s: float = 10.0,
        progress: ProgressFn = no_progress,
        max_requests: int | None = None,
    ) -> UploadReport:
        """Upload ``data`` in chunks of ``chunk`` bytes, following the server's offset.

        ``start_at`` resumes an interrupted upload: the first chunk is sent at that offset
        and the server's answer says where it really is (0 when it kept nothing: the upload
        then starts over with length and hash). ``first_timeout_s`` covers a chunk at offset
        0, which makes MCUboot erase the slot before it answers.

        Raises:
            SmpError: the server refused a chunk; DeviceTimeout: it stopped answering;
            ProtocolError: its offsets make no progress or point outside the image.
        """
        total = len(data)
        sha = hashlib.sha256(data).digest()
        report = UploadReport(size=total, chunk=chunk)
        started = self.clock()
        off = start_at if 0 <= start_at < total else 0
        limit = max_requests if max_requests is not None else 4 * (total // chunk + 2) + 16
        stuck = 0
        while off < total:
            if report.requests >= limit:
                raise ProtocolError(
                    f"upload made no progress in {limit} requests (server at offset {off})",
                    port=self.link.url,
                    phase=Phase.WRITE,
                )
            piece = data[off : off + chunk]
            at = off

            def build(seq: int, at: int = at, piece: bytes = piece) -> bytes:
                return upload_request(
                    at, piece, total=total, sha=sha, image=image, upgrade=upgrade, sequence=seq
                )

            before = self.sent_bytes
            try:
                body = self.request(
                    build,
                    f"image upload at offset {at}",
                    timeout_s=first_timeout_s if at == 0 else None,
                    phase=Phase.WRITE,
                )
            except DeviceTimeout as exc:
                if report.requests == 0 and self.answered:
                    # It answers small requests but never a chunk: MCUboot drops a frame
                    # larger than its buffer without a word.
                    exc.hint = (
                        f"the hub answers other requests but not a {len(build(0))}-byte "
                        f"upload chunk: is the profile's [smp] receive_size "
                        f"({self.receive_size}) larger than the hub's "
                        "BOOT_SERIAL_MAX_RECEIVE_SIZE?"
                    )
                raise
            report.requests += 1
            report.sent += self.sent_bytes - before
            server = body.get("off")
            if not isinstance(server, int) or not 0 <= server <= total:
                raise ProtocolError(
                    f"image upload answer has offset {server!r} for a {total}-byte image",
                    port=self.link.url,
                    phase=Phase.WRITE,
                )
            if server != at + len(piece):
                report.jumps.append((at + len(piece), server))
            stuck = stuck + 1 if server <= at else 0
            if stuck > self.tries + 2:
                raise ProtocolError(
                    f"the server keeps answering offset {server} (no progress)",
                    port=self.link.url,
                    phase=Phase.WRITE,
                )
            off = server
            self.last_offset = server
            if isinstance(body.get("match"), bool):
                report.match = body["match"]
            progress(Phase.WRITE, off, total, "")
        report.retries = sum(1 for n in self.notes if n.startswith("no answer to image upload"))
        report.seconds = self.clock() - started
        return report


def check_rc(
    body: dict[Any, Any], what: str, *, port: str | None = None, phase: Phase | None = None
) -> None:
    """Raise :class:`SmpError` for an answer that carries an error code."""
    rc = body.get("rc")
    if isinstance(rc, int) and rc != 0:
        raise SmpError(f"{what} refused: rc {rc_text(rc)}", rc=rc, port=port, phase=phase)
    err = body.get("err")
    if isinstance(err, dict):
        code, group = err.get("rc"), err.get("group")
        if isinstance(code, int) and code != 0:
            raise SmpError(
                f"{what} refused: group {group} rc {code}",
                rc=code,
                group=group if isinstance(group, int) else 0,
                port=port,
                phase=phase,
            )


def is_request(message: bytes) -> bool:
    """Whether an SMP message is a request (op read or write)."""
    return SmpHeader.unpack(message).op in (smphdr.OP.READ, smphdr.OP.WRITE)


__all__ = [
    "CONTINUE",
    "LINE_MAX",
    "RECEIVE_SIZE",
    "START",
    "FrameDecoder",
    "FrameError",
    "SlotState",
    "SmpClient",
    "SmpError",
    "UploadReport",
    "chunk_size",
    "encode_frame",
]
