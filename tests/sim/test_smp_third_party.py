"""An independent SMP client, intercreate's ``smpclient`` (PyPI), uploads an image to a
simulated MCUboot hub over its pseudo-terminal and resets it; the hub then runs it.

smpclient is told the hub's receive buffer (``BufferSize(1024)``): MCUboot does not answer
the MCUmgr parameters command, so the client cannot learn it (as the station's profile says).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from drivers.console import AppConsole
from drivers.transport.serial import SerialLink
from sim.pty import SimHub
from sim.smp import demo_image

smpclient = pytest.importorskip("smpclient")

NEW = 0x0105_0000


@pytest.mark.slow
def test_smpclient_uploads_and_resets(start_hub: Callable[..., SimHub]) -> None:
    from smp import os_management as osm
    from smpclient import SMPClient
    from smpclient.requests.image_management import ImageStatesRead
    from smpclient.requests.os_management import EchoWrite, ResetWrite
    from smpclient.transport.serial import SMPSerialTransport
    from smpclient.transport.serial.encoded import BufferSize

    hub = start_hub(protocol="smp", start_in="bootloader", paced=True)
    image = demo_image(NEW, size=16 * 1024)

    async def run() -> list[int]:
        transport = SMPSerialTransport(BufferSize(1024))
        offsets: list[int] = []
        async with SMPClient(transport, hub.port, timeout_s=5.0) as client:
            echo = await client.request(EchoWrite(d="hello"))
            assert isinstance(echo, osm.EchoWriteResponse) and echo.r == "hello"
            async for off in client.upload(image, first_timeout_s=20.0):
                offsets.append(off)
            states = await client.request(ImageStatesRead())
            assert [s.version for s in states.images] == ["1.5.0"]  # type: ignore[union-attr]
            # MCUboot answers reset {"rc": 0}, which smpclient reads as an error of code EOK.
            reset = await client.request(ResetWrite())
            assert getattr(reset, "rc", 0) == 0 and reset.header.op == 3
        return offsets

    offsets = asyncio.run(run())
    assert offsets[-1] == len(image)
    with SerialLink(hub.port, parity="none") as link:
        console = AppConsole(link)
        running = next((v for _ in range(20) if (v := console.version(0.2)) is not None), None)
    assert running == NEW
