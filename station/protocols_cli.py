"""``station protocols``: which bootloader protocols this station can speak, and from where.

A CSP that installs a private protocol package checks here that the station sees it
(docs/plugins.md); a package that fails to load is named with the reason.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console

from station.protocols import plugin_problems, plugins
from station.render import error_line, literal


def _row(name: str) -> dict[str, Any]:
    p = plugins()[name]
    return {
        "protocol": name,
        "link": str(p.link),
        "description": p.description,
        "image_formats": sorted(p.image_formats) if p.image_formats is not None else None,
        "verify": ["auto", *p.verify_methods],
        "profile_section": sorted(p.section),
        "simulated": p.sim_model is not None,
        "from": _origin(p.session),
    }


def _origin(obj: object) -> str:
    """The module a plug-in's session comes from (its package, for a private protocol)."""
    return str(getattr(obj, "__module__", "?"))


def cmd_protocols(args: argparse.Namespace, err: Console) -> int:
    """List the protocol plug-ins; 2 when one is installed but cannot be used."""
    for row in (_row(name) for name in plugins()):
        if args.json:
            print(json.dumps(row))
            continue
        formats = ", ".join(row["image_formats"] or ["any placed image"])
        print(
            literal(
                f"{row['protocol']:<10} {row['link']:<6} verify {'/'.join(row['verify']):<20} "
                f"images: {formats:<18} {row['description']} ({row['from']})"
            )
        )
    broken = plugin_problems()
    for name, why in broken.items():
        err.print(error_line(f"protocol {name}: {why}"))
    return 2 if broken else 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``protocols`` with the station's parser."""
    p = sub.add_parser(
        "protocols",
        help="list the bootloader protocols installed (built-in and plug-in packages)",
        description="Every protocol plug-in registered in the entry-point group "
        "chub_station.protocols: its link (serial or USB), the verify methods and image "
        "formats it offers, and the module it comes from (docs/plugins.md).",
        epilog="exit status: 0 every plug-in loads, 2 one is installed but cannot be used "
        "(named on stderr with the reason).",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per protocol")
    p.set_defaults(func=cmd_protocols)
