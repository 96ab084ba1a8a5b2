"""The ``station`` command: thin front end over the station API.

It parses arguments, calls the same functions the TUI will call, renders progress and
results, and maps outcomes to exit codes a rig can act on.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from enum import IntEnum
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path

from rich.console import Console

from drivers.errors import ConfigError, StationError
from drivers.types import no_progress
from firmware_images.catalog import Catalog
from firmware_images.descriptor import dotted_version
from firmware_images.loader import LoadedImage, load_image
from station.db_cli import add_commands as add_db_commands
from station.event_json import SCHEMA_VERSION
from station.flash import (
    FlashOutcome,
    HubIdentity,
    ImageChooser,
    Policy,
    Result,
    catalog_chooser,
    detect_profile,
    flash_hub,
    identify_hub,
)
from station.images_cli import add_commands as add_image_commands
from station.paths import trust_store
from station.power_cli import add_command as add_power_command
from station.profiles import Profile, builtin_names, load_profile
from station.protocols import plugin
from station.protocols_cli import add_commands as add_protocol_commands
from station.records_cli import add_commands as add_record_commands
from station.render import (
    ProgressBoard,
    console,
    error_line,
    literal,
    outcome_line,
    shown_version,
    styled,
)
from station.sessions.trace import trace_to
from station.warehouse_cli import add_commands as add_warehouse_commands


class Exit(IntEnum):
    """Exit statuses (documented in ``station --help``)."""

    PASSED = 0
    FAILED = 1
    BAD_INPUT = 2
    REFUSED = 3
    SKIPPED = 4
    INTERRUPTED = 130


EXIT_FOR = {
    Result.PASSED: Exit.PASSED,
    Result.FAILED: Exit.FAILED,
    Result.REFUSED: Exit.REFUSED,
    Result.SKIPPED: Exit.SKIPPED,
    Result.INTERRUPTED: Exit.FAILED,
}

_EPILOG = """Each command's --help gives its exit statuses. Common to all: 0 success, 2 bad
input (arguments, files, settings), 130 interrupted (Ctrl-C)."""

#: ``station flash``: one hub, so its outcome is the status.
_FLASH_EPILOG = """exit status: 0 the hub passed (verified and its running version read back),
1 the hub failed (or was interrupted), 2 bad input (image, profile, arguments) or a station
problem (no USB backend), 3 refused by policy, 4 skipped (already current), 130 interrupted
before the hub was reached."""

#: ``station run`` and ``station tui``: a batch, so no one hub's outcome is the status.
_BATCH_EPILOG = """exit status: 0 every hub passed, was already current or was refused by policy,
and no hub listed in the manifest is missing; 1 a hub failed or was interrupted, a job ended
before its hub was identified, a record was refused, the lease was lost, or a listed hub is
missing (each reason is printed on stderr); 2 bad input (rig, catalogue, manifest, arguments)
or the station already running; 130 interrupted before the batch began."""


def parse_int(text: str) -> int:
    """An integer in decimal or 0x-hex (addresses, versions)."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def parse_baud(text: str) -> int:
    """A line rate in baud: a whole number from 50 (as a profile's ``baud``)."""
    value = parse_int(text)
    if not 50 <= value <= 12_000_000:
        raise argparse.ArgumentTypeError(f"baud rate {text!r} is not from 50 to 12000000")
    return value


def parse_version(text: str) -> int:
    """A firmware version as ``0x01020304`` or ``1.2.3.4``."""
    if "." in text:
        parts = text.split(".")
        if len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts):
            return int.from_bytes(bytes(int(p) for p in parts), "big")
        raise argparse.ArgumentTypeError(f"version {text!r} is not four numbers 0..255")
    value = parse_int(text)
    if not 0 <= value <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"version {text!r} does not fit in 32 bits")
    return value


# -- commands ------------------------------------------------------------------------------


def with_baud(profile: Profile, baud: int | None) -> Profile:
    """``profile`` at the line rate the operator gave (``--baud``), as stm32flash ``-b``.

    Raises:
        ConfigError: the profile's hubs are on USB, where there is no line rate.
    """
    if baud is None:
        return profile
    if plugin(profile.protocol).usb:
        raise ConfigError(
            f"--baud sets a serial line's rate; {profile.name} hubs are on USB",
            hint="drop --baud for USB hubs",
        )
    return dataclasses.replace(profile, baud=baud)


def tracing(enabled: bool, err: Console) -> contextlib.AbstractContextManager[None]:
    """With ``--trace``, every exchange with the hub in hex on stderr, as it happens."""
    if not enabled:
        return contextlib.nullcontext()
    return trace_to(lambda line: err.print(styled(("trace ", "dim"), line)))


def cmd_flash(args: argparse.Namespace, err: Console) -> int:
    profile = with_baud(load_profile(args.profile), args.baud)
    policy = Policy(
        trust=trust_store(args.trust),
        allow_unsigned=args.allow_unsigned,
        allow_invalid=args.allow_invalid_signature,
        force=args.force,
    )
    source: LoadedImage | ImageChooser
    if args.file is not None:
        if args.catalog:
            raise ConfigError("give either an image file or --catalog, not both")
        source = load_image(
            args.file,
            args.address,
            default_address=profile.app_address,
            flash=(profile.flash_start, profile.flash_end),
        )
    elif args.catalog:
        source = catalog_chooser(Catalog.load(args.catalog), profile, policy)
    else:
        raise ConfigError("nothing to write: give an image file or --catalog DIR")
    show = not args.json and err.is_terminal
    with tracing(args.trace, err), ProgressBoard(err, enabled=show) as board:
        progress = board.slot(args.port) if show else no_progress
        out = flash_hub(
            args.port, profile, source, policy=policy, verify=args.verify, on_progress=progress
        )
        board.finish(args.port, out)
    _print_outcome(out, args.json, err)
    return EXIT_FOR[out.result]


def _auto_candidates(port: str, err: Console) -> list[str]:
    """Every profile that loads, built-in and user, for this kind of port (USB: profiles
    of USB protocols; serial: the others), in their protocols' ``probe_order`` (an STM32
    bootloader takes the first byte it hears for its baud rate, so it must hear the
    AN3155 sync byte before anything)."""
    from station.profiles import user_profiles

    names = builtin_names() + [n for n in user_profiles() if n not in builtin_names()]
    ranked = []
    for name in names:
        try:
            profile = load_profile(name)
            if profile.lines is not None:
                continue  # resets the hub by DTR/RTS: only when named (--profile NAME)
            own = plugin(profile.protocol)
        except ConfigError as exc:
            err.print(styled("note: not tried: ", exc.message))
            continue
        if own.link.takes(port):
            ranked.append((own.probe_order, name))
    return [name for _, name in sorted(ranked)]


def cmd_info(args: argparse.Namespace, err: Console) -> int:
    """A read-only look at one hub (``stm32flash PORT``, ``esptool chip_id``)."""
    tried: list[str] = []
    looks: list[HubIdentity] = []
    with tracing(args.trace, err):
        if args.profile == "auto":
            if args.baud is not None:
                raise ConfigError(
                    "--baud needs a named profile; auto tries each profile at its own rate",
                    hint="give --profile NAME with --baud",
                )
            candidates = _auto_candidates(args.port, err)
            if not args.json:
                err.print(styled("trying each profile in turn: ", ", ".join(candidates)))
            found, tried = detect_profile(args.port, candidates, restore=True, on_look=looks.append)
            if found is None:
                found = HubIdentity(
                    args.port,
                    "auto",
                    problem="no profile recognises the hub"
                    + ("" if candidates else " (no profile is for this kind of port)"),
                    hint="check the hub's power and cable, and that its model has a profile "
                    "('station profiles'; your own go in station-data/profiles)",
                    error=next((look.error for look in looks if look.error), None),
                )
        else:
            profile = with_baud(load_profile(args.profile), args.baud)
            found = identify_hub(args.port, profile, restore=True)
    station_error = next(
        (x.error for x in (*looks, found) if isinstance(x.error, ConfigError)), None
    )
    if station_error is not None and found.problem is not None:
        raise station_error  # the station's set-up, not the hub: exit 2 with the fix
    if args.json:
        print(json.dumps(_info_json(found, tried)))
    else:
        _print_info(found, tried, err)
    return 0 if found.problem is None else int(Exit.FAILED)


def _info_json(found: HubIdentity, tried: list[str]) -> dict[str, object]:
    facts = found.bootloader
    flash = None
    if facts is not None:
        flash = {
            "start": f"0x{facts.flash_start:08X}",
            "size": facts.flash_size,
            "page_size": facts.page_size,
            "from": facts.flash_from,
        }
    return {
        "port": found.port,
        "profile": found.profile,
        "identified": found.problem is None,
        "problem": found.problem,
        "hint": found.hint,
        "bootloader": None
        if facts is None
        else {"name": facts.bootloader, "version": facts.version},
        "product_id": None if facts is None else facts.product_id,
        "eui64": found.eui64,
        "hw_version": found.hw_version,
        "running_version": found.version_before,
        "found_in": found.found_in,
        "left_in": found.left_in,
        "flash": flash,
        "details": {} if facts is None else dict(facts.details),
        "tried": tried,
        "notes": list(found.notes),
    }


def _size_text(size: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


def _print_info(found: HubIdentity, tried: list[str], err: Console) -> None:
    """``label  value`` lines on stdout (what was learned, also of a hub not identified),
    then notes and the reason it was not identified on stderr."""
    facts = found.bootloader
    out = console()
    if found.eui64 is not None or facts is not None:
        rows: list[tuple[str, str]] = [("port", found.port), ("profile", found.profile)]
        if facts is not None:
            version = f", version {facts.version}" if facts.version else ""
            rows += [
                ("bootloader", facts.bootloader + version),
                ("product ID", facts.product_id or "- (the bootloader cannot say)"),
            ]
        else:  # the identity came from its application; the profile's figures prove nothing
            rows.append(("bootloader", "- (did not answer)"))
        rows += [
            ("EUI-64", found.eui64 or "-"),
            ("hardware", "-" if found.hw_version is None else str(found.hw_version)),
        ]
        running = found.version_before
        where = {"application": "found running it", "bootloader": "found in its bootloader"}
        place = where.get(found.found_in or "", "")
        if running is not None:
            rows.append(("running", f"{shown_version(running)} ({running}), {place}"))
        elif found.problem is None:
            rows.append(("running", f"- (no application in flash that starts), {place}"))
        else:
            rows.append(("running", f"- (not read), {place}"))
        if facts is not None:
            source = "from the device" if facts.flash_from == "device" else "from the profile"
            rows.append(
                (
                    "flash",
                    f"{_size_text(facts.flash_size)} at 0x{facts.flash_start:08X}, pages of "
                    f"{_size_text(facts.page_size)} ({source})",
                )
            )
            rows += list(facts.details)
        if found.problem is None:
            rows.append(("left", _left_text(found)))
        width = max(len(label) for label, _ in rows) + 2
        for label, value in rows:
            out.print(styled((label.ljust(width), "bold"), value))
    for line in tried:
        err.print(styled("  tried ", line))
    for note in found.notes:
        err.print(styled("  note: ", note))
    if found.problem is not None:
        hint = found.hint
        err.print(
            styled(
                ("not identified:", "bold red"),
                f" {found.port} as {found.profile}: {found.problem}",
                *((("\n        what to do: ", "dim"), hint) if hint else ()),
            )
        )


def _left_text(found: HubIdentity) -> str:
    where = {"application": "in its application", "bootloader": "in its bootloader"}
    left = where.get(found.left_in or "", "where it is not known")
    same = "as found" if found.left_in == found.found_in else f"found {found.found_in}"
    return f"{left}, {same}; nothing was written"


def _print_outcome(out: FlashOutcome, as_json: bool, err: Console) -> None:
    if as_json:
        print(json.dumps({"schema_version": SCHEMA_VERSION, **out.to_json()}), flush=True)
        return
    for note in out.notes:
        err.print(styled("  note: ", note))
    console().print(outcome_line(out))


def cmd_image_demo(args: argparse.Namespace, err: Console) -> int:
    from station.demo import write_demo_image

    path = write_demo_image(Path(args.output), args.version, size=args.size)
    img = load_image(path)
    print(
        f"{literal(path)}: demo application {dotted_version(args.version)}, "
        f"{len(img.data)} bytes at 0x{img.address:08X}, sha256 {img.sha256}"
    )
    return 0


def cmd_profiles(args: argparse.Namespace, err: Console) -> int:
    from station.profiles import user_dirs, user_profiles

    for name in builtin_names():
        p = load_profile(name)
        print(f"{p.name:<16} {p.protocol:<8} built-in  {literal(p.description)}")
    status = 0
    for name, path in user_profiles().items():
        if name in builtin_names():
            err.print(styled(str(path), f": ignored, the built-in profile {name!r} has this name"))
            continue
        try:
            p = load_profile(name)
        except ConfigError as exc:
            err.print(error_line(exc.message))
            status = int(Exit.BAD_INPUT)
            continue
        print(literal(f"{p.name:<16} {p.protocol:<8} {path}  {p.description}"))
    err.print(styled("user profile folders: ", ", ".join(str(d) for d in user_dirs())))
    return status


def cmd_run(args: argparse.Namespace, err: Console) -> int:
    from station.run import run_station

    return run_station(args, err)


def cmd_ports(args: argparse.Namespace, err: Console) -> int:
    from station.rig import ports_table, usb_devices

    rows = ports_table()
    usb, usb_problem = usb_devices()
    if args.json:
        print(json.dumps({"serial": rows, "usb": usb, "usb_problem": usb_problem}))
        return 0
    if not rows:
        err.print("no serial ports found (simulated hubs: see 'station sim')")
    for r in rows:
        print(
            literal(
                f"{r['device']:<16} location {r['location'] or '-':<12} serial "
                f"{r['serial_number'] or '-':<14} {r['vid:pid'] or '-':<10} {r['description']}"
            )
        )
    if usb_problem:
        err.print(styled("USB devices not listed: ", usb_problem))
    for u in usb:
        print(
            literal(
                f"{u['port']:<16} {u['vid:pid']:<10} serial {u['serial_number'] or '-':<14} "
                f"{u['looks_like'] or ''}"
            )
        )
    return 0


def cmd_sim(args: argparse.Namespace, err: Console) -> int:
    from sim.cli import run

    return run(args)


def cmd_demo(args: argparse.Namespace, err: Console) -> int:
    from station.demo import run_demo

    if args.tui and args.json:
        err.print(error_line("--tui and --json do not go together"))
        return int(Exit.BAD_INPUT)
    return run_demo(
        hubs=args.hubs,
        paced=not args.unpaced,
        size=args.size,
        as_json=args.json,
        err=err,
        tui=args.tui,
        metrics=args.metrics,
    )


# -- parser --------------------------------------------------------------------------------


def version_text() -> str:
    """What ``station --version`` prints: the installed release (see CHANGELOG.md)."""
    try:
        release = installed_version("chub-station")
    except PackageNotFoundError:  # run from a source tree that was never installed
        release = "unknown (not installed)"
    return f"station {release} (chub-station)"


def add_link_arguments(p: argparse.ArgumentParser) -> None:
    """``--baud`` and ``-v/--trace``, as stm32flash ``-b``/``-V`` and esptool ``--baud``/
    ``--trace`` give them."""
    p.add_argument(
        "--baud",
        type=parse_baud,
        metavar="B",
        help="line rate in baud for a serial hub, instead of the profile's",
    )
    p.add_argument(
        "-v",
        "--trace",
        action="store_true",
        help="print every exchange with the hub in hex on stderr ('->' sent, '<-' received)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``station`` command."""
    from sim.cli import add_arguments as add_sim_arguments

    parser = argparse.ArgumentParser(
        prog="station",
        description="Bench re-flash station for GB smart-metering Communications Hubs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="the main job on simulated hubs: a mixed rig, a consignment, the batch, reports",
        description="The main job on simulated hubs, run as 'station run' runs a real rig: "
        "builds signed catalogues for three hub models (STM32 AN3155, Silicon Labs Gecko, "
        "USB DfuSe), starts ten simulated hubs (old releases; one already current, one of "
        "another model, one faulty), writes a rig file and a consignment manifest "
        "(with one hub that never arrives), runs the batch into the store, writes every "
        "report and checks that each hub ended as the scenario expects. Files go under "
        "station-data/demo/.",
        epilog="exit status: 0 every hub ended as the scenario expects, 1 otherwise, "
        "2 bad options.",
    )
    p.add_argument(
        "--hubs",
        type=int,
        default=12,
        help="hubs (default 12: the scenario; more adds passing hubs of all four models)",
    )
    p.add_argument(
        "--size", type=parse_int, default=64 * 1024, help="image size in bytes (default 64 KiB)"
    )
    p.add_argument("--unpaced", action="store_true", help="run the hubs faster than real wires")
    p.add_argument(
        "--json", action="store_true", help="station run's JSON events, then a demo summary"
    )
    p.add_argument(
        "--tui",
        action="store_true",
        help="run the batch from the operator's terminal UI (as 'station tui') instead",
    )
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve the batch's Prometheus metrics at http://HOST:PORT/metrics while it runs",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "flash",
        help="re-flash one hub: identify, erase, write, verify, boot, confirm",
        description="Re-flash the hub on --port. The image is checked before the port is "
        "opened; of the pages it covers, only those the flash does not already hold are "
        "erased and written (every one when the bootloader cannot say: no Get Checksum); the "
        "whole image is verified (device CRC when the bootloader offers it, readback "
        "otherwise); the application is started and "
        "its running version read back. Exit 0 only when all of that succeeded.",
        epilog=_FLASH_EPILOG,
    )
    p.add_argument(
        "--port",
        required=True,
        help="device path or pyserial URL (/dev/ttyUSB0, rfc2217://h:p), a simulated hub in "
        "this process (sim://gecko?firmware=1.1.0.0), or a USB hub: usb:<serial> or "
        "usb:<bus>-<port.path> (DFU profiles)",
    )
    p.add_argument(
        "--profile",
        required=True,
        help=f"hub profile name ({', '.join(builtin_names())}) or a .toml file",
    )
    p.add_argument(
        "file",
        nargs="?",
        help="image to write: GBCS OTA or Zigbee OTA (.zigbee, .ota), GBL (.gbl, Gecko hubs), "
        "DFU or DfuSe (.dfu), Intel HEX, S-record, a container a protocol plug-in brings, "
        "or a raw binary with --address (omit it with --catalog: the catalogue chooses per "
        "hub)",
    )
    p.add_argument(
        "--catalog",
        help="choose the image from this catalogue for the hub found (target or next hop)",
    )
    p.add_argument(
        "--trust",
        help="trust store folder of PEM public keys (default station-data/trust if present)",
    )
    p.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="override: accept an image with no signature (recorded with the result)",
    )
    p.add_argument(
        "--allow-invalid-signature",
        action="store_true",
        help="override: accept a signature that does not verify (recorded with the result)",
    )
    p.add_argument(
        "--address", type=parse_int, help="load address of a raw binary (e.g. 0x08000000)"
    )
    p.add_argument(
        "--verify",
        choices=["auto", "crc", "readback"],
        help="verify method (default: the profile's, normally auto)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write even if the hub already runs this or a newer version",
    )
    add_link_arguments(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=cmd_flash)

    p = sub.add_parser(
        "info",
        help="a read-only look at one hub: bootloader, product ID, EUI-64, versions, flash",
        description="Identify the hub on --port and show what its bootloader and identity "
        "area say: the bootloader and its version, the product ID, the EUI-64, the "
        "hardware version, the running version and the flash size (as stm32flash PORT or "
        "esptool chip_id show them). It writes nothing, and a hub found running its "
        "application is left running it. --profile auto tries every profile (built-in "
        "and user), STM32 ones first.",
        epilog="exit status: 0 the hub was identified, 1 it was not (no answer, or no "
        "profile recognises it), 2 bad input (port, profile, arguments) or a station "
        "problem (no USB backend), 130 interrupted.",
    )
    p.add_argument("--port", required=True, help="as for station flash")
    p.add_argument(
        "--profile",
        required=True,
        help="hub profile name, a .toml file, or auto (try each profile in turn)",
    )
    add_link_arguments(p)
    p.add_argument("--json", action="store_true", help="print what was found as one JSON object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "sim",
        help="start simulated hubs on pseudo-terminals until interrupted",
        description="Start N simulated hubs, each on its own pseudo-terminal that any "
        "program can open, and keep them running until Ctrl-C.",
        epilog="exit status: 0 stopped by Ctrl-C (or SIGTERM), 1 a hub did not start, "
        "2 bad settings.",
    )
    add_sim_arguments(p)
    p.set_defaults(func=cmd_sim)

    add_image_commands(sub)
    add_record_commands(sub)
    add_db_commands(sub)
    add_warehouse_commands(sub)
    add_power_command(sub)
    add_protocol_commands(sub)
    isub = next(
        a for a in sub.choices["image"]._actions if isinstance(a, argparse._SubParsersAction)
    )
    q = isub.add_parser(
        "demo", help="write an unsigned demo application (Intel HEX or raw .bin) for a version"
    )
    q.add_argument("version", type=parse_version, help="firmware version, 0x01050000 or 1.5.0.0")
    q.add_argument("-o", "--output", required=True, help="file to write (.hex or .bin)")
    q.add_argument("--size", type=parse_int, default=64 * 1024, help="payload size in bytes")
    q.set_defaults(func=cmd_image_demo)

    from station.run import add_arguments as add_run_arguments

    p = sub.add_parser(
        "run",
        help="headless rig run: every slot, catalogue-chosen images, durable records",
        description="Serve every slot of a rig: each hub found gets the catalogue's image, "
        "verified and confirmed; every job is recorded durably. --json prints one event "
        "per line.",
        epilog=_BATCH_EPILOG,
    )
    add_run_arguments(p)
    p.set_defaults(func=cmd_run)

    from station.tui.cli import add_arguments as add_tui_arguments
    from station.tui.cli import cmd_tui

    p = sub.add_parser(
        "tui",
        help="the bench operator's terminal UI: pre-flight plan, slot grid, reports",
        description="Run a batch on a rig from a terminal UI (keys: ? in the UI). Leaving "
        "the UI before the batch began records nothing and exits 0.",
        epilog=_BATCH_EPILOG,
    )
    add_tui_arguments(p)
    p.set_defaults(func=cmd_tui)

    p = sub.add_parser(
        "ports",
        help="serial ports with their USB locations (for rig files)",
        epilog="exit status: 0 (USB devices that cannot be listed are named on stderr).",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ports)

    p = sub.add_parser(
        "profiles",
        help="list the hub profiles: built-in and user (station-data/profiles, $STATION_PROFILES)",
        epilog="exit status: 0 every profile loads, 2 a user profile is invalid (named on stderr).",
    )
    p.set_defaults(func=cmd_profiles)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``station`` console script."""
    args = build_parser().parse_args(argv)
    err = console(stderr=True)
    # Ports named sim://... reach a simulated hub inside this process (docs/sim-gecko.md).
    from sim.urlhandler import register

    register()
    try:
        return int(args.func(args, err))
    except StationError as exc:
        err.print(error_line(exc))
        return Exit.BAD_INPUT
    except KeyboardInterrupt:
        err.print(styled(("interrupted", "yellow")))
        return Exit.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`station ... | head`): stop quietly, as cat and grep do;
        # stdout goes to /dev/null so Python's last flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell shows for a tool stopped by a closed pipe


if __name__ == "__main__":
    sys.exit(main())
