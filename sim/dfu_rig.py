"""``station sim --protocol dfu``: simulated USB DFU hubs on a bus served on a UNIX socket.

This process is the bus: it holds the hubs (:mod:`sim.usb_dfu`), models their time on the
system clock and serves pyusb backend calls on a socket (:mod:`sim.usb_server`). It prints
one line per hub (``--json``: one JSON object) and the setting that lets ``station flash``
reach the bus::

    export STATION_USB_BACKEND=sim:/tmp/station-usb-XXXX/bus.sock
    station flash --port usb:<serial> --profile demo-dfu app.dfu --allow-unsigned

Options shared with the serial sims: ``--hubs``, ``--firmware``, ``--start-in``,
``--faults`` (the DFU kinds, :data:`sim.usb_dfu.FAULT_GRAMMAR`), ``--seed``, ``--unpaced``,
``--json``. ``--baud`` and ``--latency-ms`` describe serial lines and do not apply.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from drivers.transport.usb import ENV_BACKEND
from firmware_images.descriptor import dotted_text, format_version
from sim.an3155 import FLASH_BASE, FLASH_SIZE
from sim.core.spec import SimLink, SimModel
from sim.pty import await_ready, derive_eui64, end_process
from sim.signals import SignalStop
from sim.usb_backend import SimUsbService
from sim.usb_dfu import FAULT_KINDS, DfuHub, DfuHubSpec, parse_dfu_faults
from sim.usb_server import UsbBusServer

PROFILE = "demo-dfu"


def dfu_rig_specs(
    hubs: int,
    *,
    firmware: int | None = None,
    start_in: str = "bootloader",
    faults: str = "",
    seed: int = 0,
    paced: bool = True,
    hw_version: int = 2,
    firmware_size: int = 64 * 1024,
) -> list[DfuHubSpec]:
    """Specs of DFU hubs in slots 1..``hubs``.

    ``S:dupserial=T`` gives slot S the serial number of slot T (two hubs a selection by
    serial number cannot tell apart).

    Raises:
        ValueError: a bad setting, or a fault item naming a slot beyond ``hubs``.
    """
    items = parse_dfu_faults(faults)
    for item in items:
        for slot in (item.slot, item.value if item.kind == "dupserial" else None):
            if slot is not None and not 1 <= slot <= hubs:
                raise ValueError(
                    f"fault item {item.kind}={item.value} names slot {slot}, "
                    f"but the rig has {hubs} hub(s)"
                )
    specs = [
        DfuHubSpec(
            slot=slot,
            eui64=derive_eui64(seed, slot),
            hw_version=hw_version,
            firmware=firmware,
            firmware_size=firmware_size,
            start_in=start_in,
            faults=faults,
            paced=paced,
        )
        for slot in range(1, hubs + 1)
    ]
    for item in items:
        if item.kind == "dupserial" and item.slot is not None:
            twin = specs[item.value - 1].usb_serial
            specs[item.slot - 1] = replace(specs[item.slot - 1], serial=twin)
    return specs


def hub_info(hub: DfuHub, setting: str) -> dict[str, Any]:
    """What ``station sim --protocol dfu --json`` prints for a hub."""
    firmware = hub.spec.firmware
    return {
        "slot": hub.spec.slot,
        "port": f"usb:{hub.location}",
        "serial": hub.serial,
        "profile": PROFILE,
        "eui64": hub.spec.eui64,
        "firmware": None if firmware is None else format_version(firmware),
        "mode": "app" if hub.attach_mode.value == "runtime" else "bootloader",
        "backend": setting,
    }


def describe(info: dict[str, Any]) -> str:
    """The human line for a hub."""
    shown = "blank" if not info["firmware"] else dotted_text(info["firmware"])
    return (
        f"slot {info['slot']:>3}  {info['port']:<10} serial {info['serial']}  "
        f"EUI-64 {info['eui64']}  firmware {shown:<10}  {info['mode']}"
    )


_CTX = multiprocessing.get_context("spawn")


def _serve_bus(specs: list[DfuHubSpec], path: str, conn: Connection) -> None:
    """Child process: hold the hubs and serve the bus until told to stop or orphaned."""
    parent = os.getppid()
    try:
        service = SimUsbService.of(specs)
        server = UsbBusServer(service, path)
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    with server:
        conn.send(
            ("ready", server.setting, [hub_info(h, server.setting) for h in service.bus.hubs])
        )
        while os.getppid() == parent:
            try:
                if conn.poll(0.5) and conn.recv() == "stop":
                    return
            except EOFError:
                return  # the parent is gone


class DfuBus:
    """The parent's handle on a simulated USB bus of DFU hubs served from its own process.

    The station reaches it by setting :data:`drivers.transport.usb.ENV_BACKEND` to
    :attr:`setting` (as ``station sim --protocol dfu`` tells a shell to).
    """

    def __init__(self, folder: str, process: Any, conn: Connection) -> None:
        self.folder = folder
        self.setting = ""
        self.hubs: list[dict[str, Any]] = []
        self._process = process
        self._conn: Connection | None = conn

    @classmethod
    def launch(cls, specs: list[DfuHubSpec]) -> DfuBus:
        """Start the bus process without waiting for it (see :meth:`wait_ready`)."""
        folder = tempfile.mkdtemp(prefix="station-usb-")
        ours, theirs = _CTX.Pipe()
        process = _CTX.Process(
            target=_serve_bus,
            args=(specs, os.path.join(folder, "bus.sock"), theirs),
            name="sim-usb-bus",
            daemon=True,
        )
        process.start()
        theirs.close()
        return cls(folder, process, ours)

    def wait_ready(self, timeout_s: float | None = None) -> DfuBus:
        """Wait until the bus serves; :attr:`hubs` then holds each hub's ``hub_info``
        (``timeout_s`` None: as long as :func:`sim.pty.start_patience_s` allows one process
        on this machine, however busy).

        Raises:
            SimStartError: the bus failed or did not come up in time (it is stopped).
        """
        assert self._conn is not None
        message = await_ready(self._conn, "simulated USB bus", timeout_s, self.stop, self._process)
        _, self.setting, self.hubs = message
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the bus process and remove its socket folder; idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send("stop")
        end_process(self._process, timeout_s)
        if conn is not None:
            conn.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def run_dfu_rig(args: argparse.Namespace) -> int:
    """Serve the rig until SIGINT/SIGTERM; 0 on a clean stop, 2 on bad settings."""
    try:
        specs = dfu_rig_specs(
            args.hubs,
            firmware=args.firmware,
            start_in=args.start_in,
            faults=args.faults,
            seed=args.seed,
            paced=not args.unpaced,
        )
    except ValueError as exc:
        print(f"station sim: error: {exc}", file=sys.stderr)
        return 2
    signals = SignalStop()
    stop = signals.event
    folder = tempfile.mkdtemp(prefix="station-usb-")
    try:
        service = SimUsbService.of(specs)
        with UsbBusServer(service, os.path.join(folder, "bus.sock")) as server:
            for hub in service.bus.hubs:
                info = hub_info(hub, server.setting)
                print(json.dumps(info) if args.json else describe(info), flush=True)
            export = f"export {ENV_BACKEND}={server.setting}"
            if args.json:
                print(export, file=sys.stderr, flush=True)
            else:
                print(export, flush=True)
                print(
                    f"{len(specs)} USB DFU hub(s) on a simulated bus; run the line above in "
                    "the shell that runs 'station flash --port usb:<serial> --profile "
                    "demo-dfu ...'; Ctrl-C to stop",
                    file=sys.stderr,
                    flush=True,
                )
            while not stop.wait(0.5):
                pass
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        signals.restore()


#: The simulated USB DFU hubs (``station sim --protocol dfu``): a bus of their own.
MODEL = SimModel(
    name="dfu",
    profile=PROFILE,
    link=SimLink.USB,
    bits_per_byte=8,
    app_base=FLASH_BASE,
    largest_firmware=FLASH_SIZE,
    run_rig=run_dfu_rig,
    fault_kinds=frozenset(FAULT_KINDS),
)
