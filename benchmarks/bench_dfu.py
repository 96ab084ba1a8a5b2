"""How close a DfuSe download gets to the limit of a paced simulated USB DFU hub.

Downloads 512 KiB (the whole flash of the demo hub, erased beforehand) with
:meth:`drivers.dfu.DfuDriver.write` through the real pyusb code, on the system clock, over

- the in-process simulated backend (``SimUsbBackend``), and
- the socket server of ``station sim --protocol dfu`` (``STATION_USB_BACKEND=sim:...``),

and prints the time, the model's limit and their ratio (target <= 1.10). The limit is what
no host can beat on this hub: per wTransferSize block, the DNLOAD's frames on the wire, one
frame for the GETSTATUS that starts the programming, the programming time the device
reports in bwPollTimeout (which the host must wait), and the frame of the GETSTATUS that
finds it done; plus the Set Address Pointer exchange and the closing ABORT. Figures:
``docs/sim-dfu.md`` (Timing).

Run: ``.venv/bin/python benchmarks/bench_dfu.py [--size BYTES]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from drivers.dfu import DfuDriver
from drivers.transport.usb import UsbLink
from drivers.transport.usb_remote import RemoteUsbBackend
from sim import usb_dfu as model
from sim.pty import derive_eui64
from sim.usb_backend import SimUsbBackend, SimUsbService
from sim.usb_server import UsbBusServer

ADDRESS = model.FLASH_BASE


def limit_s(size: int, transfer: int = model.TRANSFER_SIZE) -> dict[str, float]:
    """The model's lower bound of a DfuSe download of ``size`` bytes, split in parts."""
    status = model.frame_end(model.control_wire_s(6))  # one GETSTATUS: one frame
    blocks = [min(transfer, size - off) for off in range(0, size, transfer)]
    wire = sum(model.frame_end(model.control_wire_s(n)) + 2 * status for n in blocks)
    busy = sum(model.poll_ms(model.program_time_s(n)) / 1000 for n in blocks)
    # GETSTATUS (to_idle), Set Address (DNLOAD + 2 GETSTATUS), ABORT at the end.
    setup = status + model.frame_end(model.control_wire_s(5)) + 2 * status + status
    return {"transfer frames": wire + setup, "flash busy": busy}


@contextmanager
def backend(kind: str, spec: model.DfuHubSpec) -> Iterator[tuple[Any, SimUsbService]]:
    service = SimUsbService.of([spec])
    if kind == "in-process":
        yield SimUsbBackend(service), service
        return
    with (
        tempfile.TemporaryDirectory(prefix="bench-usb-") as tmp,
        UsbBusServer(service, os.path.join(tmp, "bus.sock")) as server,
    ):
        client = RemoteUsbBackend(server.path)
        try:
            yield client, service
        finally:
            client.close()


def run(kind: str, size: int) -> float:
    spec = model.DfuHubSpec(slot=1, eui64=derive_eui64(11, 1), paced=True)
    data = os.urandom(size)
    with backend(kind, spec) as (usb_backend, service):
        drv = DfuDriver(UsbLink("usb:1-1.1", backend=usb_backend))
        drv.connect()
        drv.mass_erase()
        t0 = time.monotonic()
        drv.write(ADDRESS, data)
        elapsed = time.monotonic() - t0
        back = service.hub(1).flash.read(ADDRESS, size)
        violations = list(service.hub(1).violations)
        drv.close()
    if back != data:
        raise SystemExit(f"{kind}: the flash does not hold what was written")
    if violations:
        raise SystemExit(f"{kind}: protocol errors seen by the hub: {violations}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512 * 1024, help="bytes (default 512 KiB)")
    args = parser.parse_args()
    parts = limit_s(args.size)
    limit = sum(parts.values())
    blocks = -(-args.size // model.TRANSFER_SIZE)
    print(
        f"DfuSe download of {args.size} bytes = {blocks} blocks of {model.TRANSFER_SIZE} "
        "bytes, paced simulated hub (USB full speed, STM32L4 flash)"
    )
    shown = ", ".join(f"{k} {v:.3f} s" for k, v in parts.items())
    print(f"model limit: {limit:.3f} s ({shown}); {args.size / limit / 1024:.1f} KiB/s")
    for kind in ("in-process", "socket server"):
        elapsed = run(kind, args.size)
        ratio = elapsed / limit
        verdict = "ok" if ratio <= 1.10 else "OVER TARGET"
        print(
            f"{kind:<14} {elapsed:7.3f} s  ratio {ratio:.3f} (target <= 1.10: {verdict})  "
            f"{args.size / elapsed / 1024:.1f} KiB/s"
        )


if __name__ == "__main__":
    main()
