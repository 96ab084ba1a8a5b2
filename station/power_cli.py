"""``station power SLOT on|off|cycle --rig FILE``: switch one slot's hub by hand."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from drivers.errors import ConfigError
from station.power import PowerError
from station.render import console, error_line, styled
from station.rig import load_rig, switch_slot

_EPILOG = """\
The slot's [slot.power] table in the rig file names its switch: a port of a USB hub that
switches power per port (usb_hub, usb_port), or a relay/PDU command template run without
a shell (command = ["relay", "--ch", "{slot}", "{state}"]). "off" and "cycle" check that
the hub really lost its power: the hub port must read back unpowered and the slot's hub
must stop answering. See docs/hardware.md, "Slot power".

exit status: 0 switched (and checked), 1 the switch failed or did not switch the hub,
2 bad input (rig file, slot number, no power table) or no USB backend."""


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``station power``."""
    p = sub.add_parser(
        "power",
        help="switch a slot's hub on, off or through a power cycle (relay, PDU or USB hub)",
        description="Switch the power of one slot's hub, as the rig file's [slot.power] "
        "table says, and check it happened.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("slot", type=int, help="slot number")
    p.add_argument("state", choices=["on", "off", "cycle"], help="what to do")
    p.add_argument("--rig", required=True, help="rig file (TOML) with the slot's power table")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=cmd_power)


def cmd_power(args: argparse.Namespace, err: Console) -> int:
    """Switch the slot; say what happened."""
    rig = load_rig(args.rig)
    slot = next((s for s in rig.slots if s.number == args.slot), None)
    if slot is None:
        numbers = ", ".join(str(s.number) for s in rig.slots)
        raise ConfigError(f"{rig.source}: no slot {args.slot} (slots: {numbers})")
    try:
        switch = switch_slot(slot, rig.station_id, args.state)
    except PowerError as exc:
        if args.json:
            print(json.dumps({"slot": slot.number, "state": args.state, "error": exc.message}))
        err.print(error_line(exc))
        return 1
    except ConfigError as exc:
        raise ConfigError(f"{rig.source}: {exc.message}", hint=exc.hint) from exc
    if args.json:
        print(json.dumps({"slot": slot.number, "state": args.state, "switch": switch}))
    else:
        done = {"on": "on", "off": "off (the hub is quiet)", "cycle": "power-cycled"}[args.state]
        console().print(styled(f"slot {slot.number}: ", (done, "green"), f" by {switch}"))
    return 0
