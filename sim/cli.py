"""``station sim``: start a rig of simulated hubs and keep it running until interrupted.

The station's CLI calls :func:`add_arguments` and :func:`run`; ``python -m sim`` does the
same on its own. :func:`start_rig` is the programmatic entry used by demos and tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from firmware_images.descriptor import dotted_version
from sim.core.faults import KINDS, parse_fault_spec, plan_for_slot, split_spec
from sim.core.spec import SimLink, default_protocol, parse_version, sim_model, sim_models
from sim.pty import (
    START_MODES,
    HubSpec,
    SimHub,
    SimStartError,
    derive_eui64,
    start_hubs,
    stop_hubs,
)
from sim.signals import SignalStop


def _version_arg(text: str) -> int:
    try:
        return parse_version(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _faults_arg(text: str) -> str:
    """The grammar is checked here (with every installed hub model's kinds: a plug-in may
    bring its own); which kinds a protocol's hubs act on, once it is known."""
    kinds = KINDS.union(*(m.fault_kinds for m in sim_models().values()))
    try:
        split_spec(text, kinds)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _protocol_arg(text: str) -> str:
    """A protocol with simulated hubs; looked up only when ``station sim`` runs, so other
    commands do not load every plug-in to build their parser."""
    if text not in sim_models():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a protocol with simulated hubs (installed: "
            f"{', '.join(sim_models()) or 'none'})"
        )
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _latency_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of milliseconds") from None
    if not 0.0 <= value <= 10_000.0:
        raise argparse.ArgumentTypeError(f"latency {value} ms must be between 0 and 10000")
    return value


def _tcp_port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``station sim`` options to ``parser``."""
    parser.add_argument(
        "--protocol",
        type=_protocol_arg,
        metavar="NAME",
        help="bootloader protocol of the hubs (default: the simulator its plug-in marks as "
        "the default, AN3155 among the built-in ones): any installed protocol plug-in "
        "with simulated hubs (station protocols lists them); USB hubs "
        "(dfu) are on a simulated bus served on a UNIX socket, reached with the "
        "STATION_USB_BACKEND=sim:<socket> setting it prints (docs/sim-dfu.md)",
    )
    parser.add_argument(
        "--hubs", type=_positive_int, required=True, metavar="N", help="number of hubs (slots 1..N)"
    )
    parser.add_argument(
        "--baud", type=_positive_int, default=115200, metavar="B", help="link baud rate"
    )
    parser.add_argument(
        "--firmware",
        type=_version_arg,
        default=None,
        metavar="VERSION",
        help="application in flash, 0x01020304 or 1.2.3.4 (default: blank flash)",
    )
    parser.add_argument(
        "--start-in",
        choices=START_MODES,
        default="bootloader",
        help="bootloader: boot pin strapped; app: boot the application when it is valid",
    )
    parser.add_argument(
        "--faults", type=_faults_arg, default="", metavar="SPEC", help="faults to inject"
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of random faults and EUI-64s"
    )
    parser.add_argument(
        "--unpaced", action="store_true", help="answer as fast as possible (no wire timing)"
    )
    parser.add_argument(
        "--latency-ms",
        type=_latency_ms,
        default=1.0,
        metavar="MS",
        help="USB-serial adapter latency (default 1 ms)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per hub and line")
    parser.add_argument(
        "--links",
        metavar="DIR",
        help="keep DIR/slot-N pointing at slot N's port (stable across swaps: bind rig slots "
        "to these paths)",
    )
    parser.add_argument(
        "--rfc2217",
        type=_tcp_port,
        metavar="BASEPORT",
        help="serve slot N over RFC 2217 on TCP port BASEPORT+N-1 (rfc2217://HOST:PORT, as "
        "ser2net would) instead of on a pseudo-terminal: DTR/RTS changes reach the hub",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address the --rfc2217 ports listen on")
    parser.add_argument(
        "--lines",
        metavar="WIRING",
        help="with --rfc2217: DTR/RTS wired to the hubs' reset and boot pins, e.g. "
        "reset=rts,boot=dtr (the demo-*-lines profiles); '-rts' = active while clear",
    )
    parser.add_argument(
        "--pin-faults",
        default="",
        metavar="SPEC",
        help="with --lines: [S:]stuck-boot (the boot pin never selects the bootloader), "
        "[S:]two-resets (the first reset after power-on hangs the hub), comma-separated",
    )
    parser.add_argument(
        "--power",
        metavar="BOARD",
        help="with --rfc2217: the hubs take their power from this simulated relay board "
        "folder, channel N for slot N (switch it with 'python -m sim.power BOARD N on|off')",
    )
    parser.add_argument(
        "--commands",
        action="store_true",
        help="read operator commands from stdin, one per line: 'remove N' takes slot N's hub "
        "out (its port vanishes), 'insert N [VERSION]' puts a new hub in (a new EUI-64)",
    )


def rig_specs(
    hubs: int,
    *,
    baud: int = 115200,
    firmware: int | None = None,
    start_in: str = "bootloader",
    faults: str = "",
    seed: int = 0,
    paced: bool = True,
    latency_s: float = 0.001,
    hw_version: int = 2,
    protocol: str,
) -> list[HubSpec]:
    """Specs of hubs in slots 1..``hubs``.

    Raises:
        ValueError: a bad setting, or a fault item naming a slot beyond ``hubs``.
    """
    items = parse_fault_spec(faults)
    for item in items:
        if item.slot is not None and item.slot > hubs:
            raise ValueError(
                f"fault item {item.fault.text!r} is for slot {item.slot}, "
                f"but the rig has {hubs} hub(s)"
            )
    specs = []
    for slot in range(1, hubs + 1):
        plan_for_slot(items, slot, seed)  # contradictions are reported before any start
        specs.append(
            HubSpec(
                slot=slot,
                eui64=derive_eui64(seed, slot),
                hw_version=hw_version,
                firmware=firmware,
                start_in=start_in,
                baud=baud,
                paced=paced,
                latency_s=latency_s,
                faults=faults,
                seed=seed,
                protocol=protocol,
            )
        )
    return specs


def start_rig(
    hubs: int,
    *,
    baud: int = 115200,
    firmware: int | None = None,
    start_in: str = "bootloader",
    faults: str = "",
    seed: int = 0,
    paced: bool = True,
    latency_s: float = 0.001,
    hw_version: int = 2,
    timeout_s: float | None = None,
    protocol: str,
) -> list[SimHub]:
    """Start ``hubs`` simulated hubs (slots 1..N) in parallel; returns them ready.

    Raises:
        ValueError: bad settings (nothing is started).
        SimStartError: a hub did not start (all are stopped again).
    """
    specs = rig_specs(
        hubs,
        baud=baud,
        firmware=firmware,
        start_in=start_in,
        faults=faults,
        seed=seed,
        paced=paced,
        latency_s=latency_s,
        hw_version=hw_version,
        protocol=protocol,
    )
    return start_hubs(specs, timeout_s)


def describe(hub: SimHub) -> str:
    """The human line for a ready hub."""
    firmware = hub.spec.firmware
    shown = "blank" if firmware is None else dotted_version(firmware)
    return (
        f"slot {hub.spec.slot:>3}  {hub.port:<14} EUI-64 {hub.spec.eui64}  "
        f"firmware {shown:<10}  {hub.mode}"
    )


def run(args: argparse.Namespace) -> int:
    """Run the rig until SIGINT/SIGTERM; 0 on a clean stop, 2 on bad settings, 1 on failure."""
    if args.protocol is None:
        args.protocol = default_protocol()
        if args.protocol is None:
            print(
                "station sim: error: --protocol is required: no installed simulator is the "
                f"default (installed: {', '.join(sim_models())})",
                file=sys.stderr,
            )
            return 2
    model = sim_model(args.protocol)
    serial_only = [o for o in ("rfc2217", "lines", "pin_faults", "power") if getattr(args, o, None)]
    if model.link is SimLink.USB and serial_only:
        print(
            f"station sim: error: --{serial_only[0].replace('_', '-')} is for serial hubs; "
            f"{args.protocol.upper()} hubs are USB devices",
            file=sys.stderr,
        )
        return 2
    if model.run_rig is not None:  # hubs with a rig of their own (a USB bus)
        return model.run_rig(args)
    try:
        specs = rig_specs(
            args.hubs,
            baud=args.baud,
            firmware=args.firmware,
            start_in=args.start_in,
            faults=args.faults,
            seed=args.seed,
            paced=not args.unpaced,
            latency_s=args.latency_ms / 1000.0,
            protocol=args.protocol,
        )
    except ValueError as exc:
        print(f"station sim: error: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "rfc2217", None) is not None:
        from sim.rfc2217 import run_rig

        return run_rig(args, specs)
    if (
        getattr(args, "lines", None)
        or getattr(args, "pin_faults", "")
        or getattr(args, "power", None)
    ):
        print(
            "station sim: error: --lines, --pin-faults and --power need --rfc2217 (a "
            "pseudo-terminal has no modem lines, and its hub no power switch)",
            file=sys.stderr,
        )
        return 2
    signals = SignalStop()
    stop = signals.event
    hubs: list[SimHub] = []
    try:
        try:  # all in parallel, waited on while they keep coming up
            hubs = start_hubs(specs)
        except SimStartError as exc:
            print(f"station sim: error: {exc}", file=sys.stderr)
            return 1
        for hub in hubs:
            print(json.dumps(hub.info()) if args.json else describe(hub), flush=True)
        if not args.json:
            print(f"{len(hubs)} hub(s) running; Ctrl-C to stop", file=sys.stderr, flush=True)
        links = Path(args.links) if getattr(args, "links", None) else None
        for hub in hubs:
            _link(links, hub)
        if getattr(args, "commands", False):
            _serve_commands(args, hubs, links, stop)
        while not stop.wait(0.5):
            pass
        return 0
    finally:
        stop_hubs(hubs)
        if getattr(args, "links", None):
            for hub in hubs:  # the ports are gone: so are the slots' links
                (Path(args.links) / f"slot-{hub.spec.slot}").unlink(missing_ok=True)
        signals.restore()


def _link(links: Path | None, hub: SimHub) -> None:
    """Point ``links/slot-N`` at the hub's pseudo-terminal (atomically replaced)."""
    if links is None:
        return
    links.mkdir(parents=True, exist_ok=True)
    tmp = links / f".slot-{hub.spec.slot}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(hub.port)
    tmp.replace(links / f"slot-{hub.spec.slot}")


def _serve_commands(
    args: argparse.Namespace, hubs: list[SimHub], links: Path | None, stop: threading.Event
) -> None:
    """Operator swaps from stdin, handled in a reader thread until stdin closes."""
    generation = itertools.count(1)

    def handle(line: str) -> str:
        words = line.split()
        if len(words) < 2 or words[0] not in ("remove", "insert") or not words[1].isdigit():
            return "error: commands are 'remove N' and 'insert N [VERSION]'"
        slot = int(words[1])
        current = next((h for h in hubs if h.spec.slot == slot), None)
        if words[0] == "remove":
            if current is None:
                return f"error: slot {slot} is empty"
            hubs.remove(current)
            if links is not None:
                (links / f"slot-{slot}").unlink(missing_ok=True)
            current.stop()
            return json.dumps({"slot": slot, "removed": True})
        if current is not None:
            return f"error: slot {slot} already holds a hub; remove it first"
        firmware = parse_version(words[2]) if len(words) > 2 else args.firmware
        spec = rig_specs(
            max(slot, args.hubs),
            baud=args.baud,
            firmware=firmware,
            start_in=args.start_in,
            faults="",
            seed=args.seed,
            paced=not args.unpaced,
            latency_s=args.latency_ms / 1000.0,
            protocol=args.protocol,
        )[slot - 1]
        # A different hub: a new identity, as when an operator swaps one in.
        spec = dataclasses.replace(
            spec, eui64=derive_eui64(args.seed + 7919 * next(generation), slot)
        )
        hub = SimHub.start(spec)
        hubs.append(hub)
        _link(links, hub)
        return json.dumps(hub.info()) if args.json else describe(hub)

    def reader() -> None:
        for line in sys.stdin:
            if stop.is_set():
                return
            if line.strip():
                try:
                    print(handle(line.strip()), flush=True)
                except (ValueError, SimStartError) as exc:
                    print(f"error: {exc}", flush=True)

    threading.Thread(target=reader, name="sim-commands", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sim``: the same as ``station sim``."""
    parser = argparse.ArgumentParser(
        prog="python -m sim", description="Run simulated Communications Hubs on pseudo-terminals."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
