"""The Gecko driver through real pyserial to simulated hubs on pseudo-terminals."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from drivers.console import AppConsole
from drivers.errors import HubReset, NackError, PortVanished
from drivers.gecko import (
    GeckoDriver,
    GeckoTimeouts,
    HubStopped,
    UploadAborted,
    UploadInterrupted,
    abort_reason,
)
from drivers.transport.serial import SerialLink
from drivers.xmodem import BlockRefused
from sim.gecko import demo_gbl, menu_text
from sim.pty import SimHub

NEW = 0x0105_0000
FILE = demo_gbl(NEW, size=8 * 1024)
StartHub = Callable[..., SimHub]


@pytest.fixture
def gecko(start_hub: StartHub) -> Iterator[Callable[..., GeckoDriver]]:
    links: list[SerialLink] = []

    def connect(
        tries: int = 5, timeouts: GeckoTimeouts | None = None, **hub: object
    ) -> GeckoDriver:
        started = start_hub(protocol="gecko", **hub)
        link = SerialLink(started.port, parity="none")
        link.open()
        links.append(link)
        return GeckoDriver(link, tries=tries, timeouts=timeouts)

    yield connect
    for link in links:
        link.close()


def test_probe_upload_run(gecko: Callable[..., GeckoDriver]) -> None:
    drv = gecko()
    assert drv.probe() == "2.04.02"
    assert drv.probe() == "2.04.02"  # the menu comes back every time
    progress: list[int] = []
    report = drv.upload(FILE, lambda phase, done, total, note: progress.append(done))
    assert report.result == "Serial upload complete" and report.file_bytes == len(FILE)
    assert report.blocks == -(-len(FILE) // 128) and report.retransmissions == 0
    assert progress[-1] == len(FILE) and drv.notes == []
    drv.run_application()
    console = AppConsole(drv.link)
    assert console.wait_banner(2.0) == NEW
    assert console.version() == NEW
    console.enter_bootloader()
    assert drv.wait_menu() == "2.04.02"


def test_probe_finds_no_menu_when_the_application_runs(gecko: Callable[..., GeckoDriver]) -> None:
    drv = gecko(start_in="app")
    assert drv.probe() is None
    assert AppConsole(drv.link).version() == 0x0101_0000


def test_bad_end_crc_is_refused_with_its_code(gecko: Callable[..., GeckoDriver]) -> None:
    drv = gecko()
    drv.probe()
    bad = bytearray(FILE)
    bad[-1] ^= 0x5A
    with pytest.raises(UploadAborted) as info:
        drv.upload(bytes(bad))
    last = -(-len(FILE) // 128)
    assert info.value.message == (
        f"upload block {last}: the bootloader aborted the upload: file error 0x43 "
        "(the GBL END tag's CRC-32 does not match the file)"
    )
    assert (info.value.kind, info.value.code, info.value.phase) == ("file", 0x43, "write")
    assert drv.probe() == "2.04.02"  # the bootloader is back in its menu


def test_a_file_that_is_not_a_gbl(gecko: Callable[..., GeckoDriver]) -> None:
    drv = gecko()
    drv.probe()
    with pytest.raises(UploadAborted, match=r"upload block 1: .*file error 0x41"):
        drv.upload(b"\x00" * 1000)


def test_nak_every_try_cancels_and_brings_the_menu_back(
    gecko: Callable[..., GeckoDriver],
) -> None:
    drv = gecko(tries=3, faults="nack=2x10")
    drv.probe()
    with pytest.raises(BlockRefused) as info:
        drv.upload(FILE)
    assert info.value.message == "upload block 3: NAK after 3 tries"
    assert isinstance(info.value, NackError) and info.value.block == 3
    assert any("upload cancelled, bootloader menu back" in n for n in drv.notes)
    assert drv.probe() == "2.04.02"


def test_power_loss_is_a_restart_and_the_partial_app_does_not_boot(
    gecko: Callable[..., GeckoDriver],
) -> None:
    drv = gecko(faults="powerloss=10")
    drv.probe()
    with pytest.raises(UploadInterrupted, match="upload block 11: the hub restarted") as info:
        drv.upload(FILE)
    assert isinstance(info.value, HubReset)
    drv.run_application()
    assert drv.wait_menu(1.0) == "2.04.02"  # no valid application: the menu again
    drv.upload(FILE)  # the fault fired once: a fresh upload goes through
    drv.run_application()
    assert AppConsole(drv.link).wait_banner(2.0) == NEW


def test_a_hub_that_stops_answering(gecko: Callable[..., GeckoDriver]) -> None:
    drv = gecko(faults="stall=4", timeouts=GeckoTimeouts(block_s=0.3, recover_s=0.5))
    drv.probe()
    start = time.monotonic()
    with pytest.raises(HubStopped, match="upload block 5: no answer after 2 tries; then the hub"):
        drv.upload(FILE)
    assert time.monotonic() - start < 3.0


def test_a_vanishing_port(gecko: Callable[..., GeckoDriver]) -> None:
    drv = gecko(faults="vanish=3")
    drv.probe()
    with pytest.raises(PortVanished):
        drv.upload(FILE)


def test_recover_from_a_bootloader_left_inside_a_block(gecko: Callable[..., GeckoDriver]) -> None:
    drv = gecko()
    drv.probe()
    drv.link.write(b"1")
    # Wait until the receiver asks for the first block ('C'), then break off inside it.
    deadline = time.monotonic() + 5
    while b"C" not in drv.link.read(1, 0.5):
        assert time.monotonic() < deadline, "the bootloader never started receiving"
    drv.link.write(bytes([1, 1, 254]) + FILE[:40])  # part of a block: a newline is more data
    assert drv.recover() == "2.04.02"


@pytest.mark.parametrize("start_in", ["bootloader", "app"])
def test_reach_menu_from_either_mode(gecko: Callable[..., GeckoDriver], start_in: str) -> None:
    drv = gecko(start_in=start_in)
    assert drv.reach_menu(AppConsole(drv.link)) == "2.04.02"
    assert drv.probe() == "2.04.02"


def test_abort_reason_words() -> None:
    assert abort_reason("block", 0x25) == "block error 0x25 (a block number was out of sequence)"
    assert abort_reason("file", 0x99) == "file error 0x99 (an unlisted error)"
    assert abort_reason("block", None) == "no reason given"


class ChunkLink:
    """A link that delivers scripted chunks of text, one chunk per blocking read."""

    url = "chunks://"

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.rx = bytearray()

    def read(self, n: int, timeout_s: float) -> bytes:
        if not self.rx and self.chunks:
            self.rx += self.chunks.pop(0)
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out

    def read_waiting(self, n: int) -> bytes:
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out

    def write(self, data: bytes) -> None:
        pass


def test_menu_nul_that_trails_the_menu_is_taken_with_it() -> None:
    """On hardware the menu's terminating NUL can come in a later USB packet; the driver
    takes it with the menu, so the application's banner read next starts clean."""
    menu = menu_text()
    link = ChunkLink([menu[:-1], menu[-1:], b"CHUB APP 0x01050000 READY\r\n"])
    drv = GeckoDriver(link)  # type: ignore[arg-type]
    assert drv.wait_menu(1.0) == "2.04.02"
    assert link.read(64, 1.0) == b"CHUB APP 0x01050000 READY\r\n"
