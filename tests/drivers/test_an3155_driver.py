"""The AN3155 driver through real pyserial to simulated hubs on pseudo-terminals."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from drivers.an3155 import An3155Driver, Cmd, NeedsErase
from drivers.console import AppConsole
from drivers.crc import stm32_crc
from drivers.errors import NoSync, PortBusy, PortNotFound
from drivers.transport.serial import SerialLink
from sim.pty import SimHub

BASE = 0x0800_0000


@pytest.fixture
def driver(start_hub: Callable[..., SimHub]) -> Iterator[An3155Driver]:
    hub = start_hub()
    with SerialLink(hub.port) as link:
        drv = An3155Driver(link)
        assert drv.sync() is True  # fresh bootloader: ACK
        drv.identify()
        yield drv


def test_identify(driver: An3155Driver) -> None:
    info = driver.info
    assert info is not None
    assert (info.version, info.product_id) == (0x31, 0x462)
    assert {Cmd.GET_CHECKSUM, Cmd.EXTENDED_ERASE, Cmd.WRITE_MEMORY} <= info.commands
    assert driver.get_version() == 0x31
    assert driver.sync() is False  # already synchronised: NACK


@pytest.mark.parametrize("pipeline", [True, False])
def test_erase_write_read_checksum(driver: An3155Driver, pipeline: bool) -> None:
    driver.pipeline = pipeline
    data = os.urandom(1000)  # not a multiple of 256 or 4: exercises padding
    driver.erase_pages([8, 9])
    driver.write_memory(BASE + 8 * 2048, data)
    padded = data + b"\xff" * 0  # 1000 is a multiple of 4
    assert driver.read_memory(BASE + 8 * 2048, 1000) == padded
    assert driver.get_checksum(BASE + 8 * 2048, 1000) == stm32_crc(padded)
    assert driver.verify(BASE + 8 * 2048, data, method="crc").ok
    res = driver.verify(BASE + 8 * 2048, data, method="readback")
    assert (res.ok, res.method) == (True, "readback")
    bad = driver.verify(BASE + 8 * 2048, data[:-1] + bytes([data[-1] ^ 1]), method="readback")
    assert not bad.ok and "0x080043E7" in bad.detail


def test_write_over_programmed_flash_needs_erase(driver: An3155Driver) -> None:
    # The hub holds its old application at BASE; the L4 cannot re-program a word.
    with pytest.raises(NeedsErase, match="write block 0 at 0x08000000"):
        driver.write_memory(BASE, b"\x00" * 256)


def test_mass_erase(driver: An3155Driver) -> None:
    driver.mass_erase()
    assert driver.read_memory(BASE, 512) == b"\xff" * 512


def test_go_starts_the_application(driver: An3155Driver) -> None:
    driver.go(BASE)
    console = AppConsole(driver.link)
    assert console.wait_banner(2.0) == 0x0101_0000
    assert console.version() == 0x0101_0000
    console.enter_bootloader()
    assert driver.sync() is True  # back in a fresh bootloader


def test_port_errors(start_hub: Callable[..., SimHub]) -> None:
    with pytest.raises(PortNotFound, match="/dev/no-such-port"):
        SerialLink("/dev/no-such-port").open()
    hub = start_hub()
    with SerialLink(hub.port), pytest.raises(PortBusy, match="in use"):
        SerialLink(hub.port).open()


def test_silent_port_gives_no_sync() -> None:
    master, slave = os.openpty()
    try:
        with SerialLink(os.ttyname(slave)) as link:
            with pytest.raises(NoSync, match="0x7F") as exc:
                An3155Driver(link).sync(timeout_s=0.5)
            assert "bootloader" in (exc.value.hint or "")
    finally:
        os.close(master)
        os.close(slave)


def test_legacy_erase_command(start_hub: Callable[..., SimHub]) -> None:
    """A bootloader that lists Erase (0x43) instead of Extended Erase gets 1-byte pages."""
    hub = start_hub(erase_command=0x43)
    with SerialLink(hub.port) as link:
        drv = An3155Driver(link)
        drv.sync()
        info = drv.identify()
        assert Cmd.ERASE in info.commands and Cmd.EXTENDED_ERASE not in info.commands
        drv.erase_pages([0, 1])
        assert drv.read_memory(BASE, 4096) == b"\xff" * 4096
        assert drv.read_memory(BASE + 4096, 4) != b"\xff" * 4  # page 2 untouched
        drv.mass_erase()
        assert drv.read_memory(BASE + 4096, 4) == b"\xff" * 4


def test_socket_url(start_hub: Callable[..., SimHub]) -> None:
    """socket:// (and so ser2net-style bridges) goes through the same driver code."""
    import socket
    import threading

    hub = start_hub()
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def bridge() -> None:
        conn, _ = server.accept()
        with SerialLink(hub.port) as tty:
            conn.settimeout(0.01)
            while True:
                try:
                    data = conn.recv(4096)
                    if not data:
                        return
                    tty.write(data)
                except TimeoutError:
                    pass
                back = tty.read(4096, 0.001)
                if back:
                    conn.sendall(back)

    threading.Thread(target=bridge, daemon=True).start()
    with SerialLink(f"socket://127.0.0.1:{port}") as link:
        drv = An3155Driver(link)
        drv.sync()
        assert drv.identify().product_id == 0x462
        assert drv.read_memory(0x1FFF_7000, 4) == b"HBID"
    server.close()


class CountingLink(SerialLink):
    """A real serial link that counts the calls the driver makes of it."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reads = self.writes = 0

    def read(self, n: int, timeout_s: float) -> bytes:
        self.reads += 1
        return super().read(n, timeout_s)

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def test_a_pipelined_block_is_one_write_and_one_read(start_hub: Callable[..., SimHub]) -> None:
    # Per-block overhead is what 32 slots pay 32 times over: each 256-byte block goes out
    # as one burst and its three ACKs come back through one read, not three.
    hub = start_hub()
    with CountingLink(hub.port) as link:
        drv = An3155Driver(link)
        drv.sync()
        drv.identify()
        drv.erase_pages([16, 17, 18, 19])
        data = os.urandom(32 * 256)
        link.reads = link.writes = 0
        drv.write_memory(BASE + 16 * 2048, data)
        assert (link.writes, link.reads) == (32, 32)
        assert drv.get_checksum(BASE + 16 * 2048, len(data)) == stm32_crc(data)
