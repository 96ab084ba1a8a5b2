"""XMODEM-CRC framing and the sender: against scripted receivers and the pure Gecko model."""

from __future__ import annotations

import random

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from drivers.crc import crc16_xmodem
from drivers.errors import DeviceTimeout, NackError
from drivers.xmodem import (
    ACK,
    BLOCK_SIZE,
    CAN,
    EOT,
    FRAME_SIZE,
    NAK,
    SOH,
    SUB,
    BlockRefused,
    BlockTimeout,
    FrameCheck,
    ReceiverCancelled,
    SenderTimeouts,
    TransferError,
    UnexpectedOutput,
    XmodemSender,
    block_count,
    check_frame,
    encode_block,
    frames,
    pad_block,
    sequence_number,
    split_blocks,
)
from sim.faults import fault_plan
from sim.gecko import demo_app, demo_gbl
from tests.xmodemkit import ModelLink, hub_in_upload, noisy

NEW = 0x0105_0000
APP = demo_app(NEW, size=1024)
FILE = demo_gbl(NEW, size=1024)
FAST = SenderTimeouts(start_s=0.2, response_s=4.0, second_can_s=0.01, quiet_s=0.01)


class ScriptLink:
    """Answers each write with the next scripted reply (b"" = silence)."""

    url = "script://"

    def __init__(self, replies: list[bytes], first: bytes = b"") -> None:
        self.replies = list(replies)
        self.rx = bytearray(first)
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))
        if self.replies:
            self.rx += self.replies.pop(0)

    def read(self, n: int, timeout_s: float) -> bytes:
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out


# --- framing -------------------------------------------------------------------------------


def test_frame_layout_and_crc_high_byte_first() -> None:
    data = b"123456789" + bytes(BLOCK_SIZE - 9)
    frame = encode_block(1, data)
    assert len(frame) == FRAME_SIZE == 133
    assert frame[:3] == bytes([SOH, 0x01, 0xFE])
    assert frame[3:131] == data
    assert frame[131:] == crc16_xmodem(data).to_bytes(2, "big")
    assert crc16_xmodem(b"123456789") == 0x31C3  # protocols.md §6 check value


def test_numbers_start_at_1_and_wrap() -> None:
    assert [sequence_number(i) for i in (0, 1, 253, 254, 255, 256)] == [1, 2, 254, 255, 0, 1]
    numbers = [f[1] for f in frames(bytes(300 * BLOCK_SIZE))]
    assert numbers[:2] == [1, 2] and numbers[254:257] == [255, 0, 1]
    assert all(f[1] + f[2] == 0xFF for f in frames(bytes(300 * BLOCK_SIZE)))


def test_padding_of_the_last_block() -> None:
    blocks = split_blocks(b"x" * 130)
    assert [len(b) for b in blocks] == [128, 128]
    assert blocks[1] == b"xx" + bytes([SUB]) * 126
    assert pad_block(b"a", fill=0xFF) == b"a" + b"\xff" * 127
    assert block_count(0) == 0 and block_count(128) == 1 and block_count(129) == 2
    with pytest.raises(ValueError, match="128"):
        pad_block(bytes(129))
    with pytest.raises(ValueError, match="exactly 128"):
        encode_block(1, b"short")


@given(data=st.binary(min_size=0, max_size=BLOCK_SIZE), number=st.integers(0, 255))
def test_every_frame_checks_and_any_single_bit_error_is_caught(data: bytes, number: int) -> None:
    frame = encode_block(number, pad_block(data))
    assert check_frame(frame) is FrameCheck.OK
    for position in (0, 1, 2, 3, 70, 130, 131, 132):
        for bit in range(8):
            bad = bytearray(frame)
            bad[position] ^= 1 << bit
            verdict = check_frame(bytes(bad))
            if position == 0:
                assert verdict is FrameCheck.NOT_SOH
            elif position in (1, 2):
                assert verdict is FrameCheck.BAD_COMPLEMENT
            else:
                assert verdict is FrameCheck.BAD_CRC
    assert check_frame(frame[:-1]) is FrameCheck.BAD_LENGTH


# --- the sender against scripted receivers -------------------------------------------------


def test_start_skips_text_and_nul_then_extra_cs_are_ignored() -> None:
    data = bytes(200)
    link = ScriptLink(
        [b"CC" + bytes([ACK]), bytes([ACK]), bytes([ACK])], first=b"\r\nbegin upload\r\n\0C"
    )
    sender = XmodemSender(link, timeouts=FAST)
    sender.wait_for_start()
    assert sender.send(data) == 2
    assert link.written[-1] == bytes([EOT]) and sender.retried == {}


def test_wait_for_start_cancel_and_timeout() -> None:
    with pytest.raises(ReceiverCancelled, match="before the first block"):
        XmodemSender(ScriptLink([], first=bytes([CAN, CAN])), timeouts=FAST).wait_for_start()
    with pytest.raises(BlockTimeout, match="did not ask for data"):
        XmodemSender(ScriptLink([], first=b"junk"), timeouts=FAST).wait_for_start(0.05)


def test_nak_and_a_garbled_answer_cost_a_try_each() -> None:
    link = ScriptLink([bytes([NAK]), b"\x99", bytes([ACK]), bytes([ACK])])
    sender = XmodemSender(link, tries=3, timeouts=FAST)
    sender.send(bytes(100))
    assert link.written[0] == link.written[1] == link.written[2]
    assert sender.retried == {1: 3} and sender.retransmissions == 2
    summary = sender.summary()
    assert summary is not None and "1 block(s) needed more than one try: 1 (3 tries)" in summary


def test_nak_every_try_names_block_and_tries() -> None:
    link = ScriptLink([bytes([ACK])] * 2 + [bytes([NAK])] * 3)
    with pytest.raises(BlockRefused) as info:
        XmodemSender(link, tries=3, timeouts=FAST).send(bytes(500))
    assert str(info.value) == "write: upload block 3: NAK after 3 tries (" + info.value.hint + ")"
    assert info.value.block == 3 and info.value.phase == "write"
    assert isinstance(info.value, NackError)


def test_silence_gives_up_after_the_timeout_tries() -> None:
    link = ScriptLink([bytes([ACK])])
    sender = XmodemSender(link, tries=5, timeout_tries=2, timeouts=SenderTimeouts(response_s=0.01))
    with pytest.raises(BlockTimeout, match="upload block 2: no answer after 2 tries") as info:
        sender.send(bytes(300))
    assert isinstance(info.value, DeviceTimeout) and len(link.written) == 3


def test_receiver_cancel_and_unexpected_text() -> None:
    with pytest.raises(ReceiverCancelled, match="upload block 2: the receiver cancelled"):
        XmodemSender(ScriptLink([bytes([ACK]), bytes([CAN, CAN, CAN])]), timeouts=FAST).send(
            bytes(300)
        )
    with pytest.raises(UnexpectedOutput) as info:
        XmodemSender(ScriptLink([b"\r\nGecko Bootloader"]), timeouts=FAST).send(bytes(10))
    assert info.value.data == b"\r\nGecko Bootloader" and info.value.block == 1
    # A lone CAN is line noise: the block is sent again.
    link = ScriptLink([bytes([CAN]), bytes([ACK]), bytes([ACK])])
    XmodemSender(link, timeouts=FAST).send(bytes(10))
    assert len(link.written) == 3


def test_eot_naked_once_then_acked() -> None:
    link = ScriptLink([bytes([ACK]), bytes([NAK]), bytes([ACK])])
    XmodemSender(link, timeouts=FAST).send(bytes(10))
    assert link.written[1:] == [bytes([EOT]), bytes([EOT])]


class LoggingLink(ScriptLink):
    """A :class:`ScriptLink` that logs writes and answers read, in order."""

    def __init__(self, replies: list[bytes], log: list[tuple[str, object]]) -> None:
        super().__init__(replies)
        self.log = log

    def write(self, data: bytes) -> None:
        self.log.append(("write", bytes(data)))
        super().write(data)

    def read(self, n: int, timeout_s: float) -> bytes:
        got = super().read(n, timeout_s)
        self.log.append(("read", got))
        return got


def test_each_frame_is_one_write_and_progress_only_counts_acknowledged_blocks() -> None:
    data = bytes(range(256)) * 2 + b"tail"  # 5 blocks, the last one padded
    log: list[tuple[str, object]] = []
    link = LoggingLink([bytes([ACK])] * 6, log)
    sender = XmodemSender(link)
    count = sender.send(data, lambda p, done, total, note: log.append(("progress", done)))
    assert count == 5
    writes = [item for kind, item in log if kind == "write"]
    assert writes == [*frames(data), bytes([EOT])]  # one write per frame, nothing else
    # Each answer is one 1-byte read; a block is reported only once its ACK was read, and
    # the reports together count every byte once.
    reads = [item for kind, item in log if kind == "read"]
    assert reads == [bytes([ACK])] * 6
    done = [item for kind, item in log if kind == "progress"]
    assert done == [128, 256, 384, 512, len(data)]
    acked = 0
    for kind, item in log:
        if kind == "read":
            acked += 1
        elif kind == "progress":
            assert isinstance(item, int) and item <= acked * BLOCK_SIZE


def test_cancel_sends_can_can() -> None:
    link = ScriptLink([])
    XmodemSender(link).cancel()
    assert link.written == [bytes([CAN, CAN])]


# --- the sender against the pure Gecko model -----------------------------------------------


def test_upload_to_the_model_lands_the_image() -> None:
    hub, link = hub_in_upload()
    sender = XmodemSender(link, timeouts=FAST)
    sender.wait_for_start()
    progress: list[int] = []
    assert sender.send(FILE, lambda p, done, total, note: progress.append(done)) == 9
    assert progress[-1] == len(FILE)
    assert hub.uploads_completed == 1 and hub.app_bytes(len(APP)) == APP


def test_frames_built_beforehand_are_what_goes_out() -> None:
    hub, link = hub_in_upload()
    sender = XmodemSender(link, timeouts=FAST)
    sender.wait_for_start()
    prepared = list(frames(FILE))
    assert sender.send(FILE, prepared=prepared) == len(prepared)
    assert hub.uploads_completed == 1 and hub.app_bytes(len(APP)) == APP
    assert bytes(link.written).startswith(b"1" + b"".join(prepared))


def test_frames_built_for_another_file_are_refused_before_sending() -> None:
    link = ScriptLink([])
    with pytest.raises(ValueError, match="prepared frames"):
        XmodemSender(link, timeouts=FAST).send(bytes(300), prepared=list(frames(bytes(100))))
    assert link.written == []


def test_model_nak_fault_names_the_block() -> None:
    _, link = hub_in_upload(faults=fault_plan("nack=5x5", 1))
    sender = XmodemSender(link, tries=3, timeouts=FAST)
    sender.wait_for_start()
    with pytest.raises(BlockRefused, match="upload block 6: NAK after 3 tries"):
        sender.send(FILE)


def test_model_lost_ack_costs_one_resend() -> None:
    hub, link = hub_in_upload(faults=fault_plan("lostack=2", 1))
    sender = XmodemSender(link, timeouts=FAST)
    sender.wait_for_start()
    sender.send(FILE)
    assert sender.retried == {3: 2} and hub.app_bytes(len(APP)) == APP


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    drop=st.sampled_from([0.0, 0.002, 0.01]),
    flip=st.sampled_from([0.0, 0.002, 0.01]),
)
def test_a_noisy_line_never_gives_a_false_pass(seed: int, drop: float, flip: float) -> None:
    """Either the upload completes and the flash holds the image, or a typed error says
    which block failed; a bootable application is always exactly the image."""
    rng = random.Random(seed)
    hub, _ = hub_in_upload()
    link = ModelLink(hub, to_hub=noisy(drop, flip, rng), to_host=noisy(drop, flip, rng))
    sender = XmodemSender(link, tries=5, timeout_tries=2, timeouts=FAST)
    try:
        sender.send(FILE)
    except TransferError as exc:
        event(f"failed: {type(exc).__name__}")
        assert exc.phase == "write" and "upload" in exc.message
    else:
        event("completed")
        assert hub.uploads_completed == 1
        assert hub.app_bytes(len(APP)) == APP
    if hub.application() is not None:
        assert hub.app_bytes(len(APP)) == APP
