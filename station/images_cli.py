"""``station image ...`` and ``station catalog ...``: inspect, verify, build and catalogue images.

Thin front end: parsing and policy live in :mod:`firmware_images`; this module only turns
arguments into calls and results into text, JSON and exit codes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console
from rich.table import Table
from rich.text import Text

from drivers.errors import ConfigError, ImageError
from firmware_images import build as demo
from firmware_images.catalog import INDEX, Catalog, Decision, parse_version_text
from firmware_images.descriptor import dotted_text, dotted_version, format_version
from firmware_images.files import KEY_FILE_LIMIT, read_regular_file
from firmware_images.gbl import build_gbl
from firmware_images.identity import (
    Identity,
    check_identity,
    claims,
    disagreements,
    signature_coverage,
    trusted_identity,
    why_untrusted,
)
from firmware_images.loader import parse_file
from firmware_images.model import ParsedImage, SigStatus
from firmware_images.trust import signature_hint, signature_refusal
from firmware_images.zigbee import (
    build_gbcs_image,
    build_zigbee_ota,
    ecdsa_p256_sign,
    gbcs_file_name,
)
from station.paths import DATA, DEFAULT_CATALOG, DEFAULT_TRUST, trust_store
from station.render import Part, console, literal, styled


def _version(text: str) -> int:
    try:
        return parse_version_text(text, "version")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return value if isinstance(value, (str, float, bool, type(None))) else str(value)


def identity_json(identity: Identity) -> dict[str, Any]:
    """One copy of an image's identity, JSON-ready (absent fields are None)."""
    v, hw = identity.version, identity.hw_range
    return {
        "source": identity.source,
        "signed": identity.signed,
        "manufacturer_code": identity.manufacturer_code,
        "image_type": identity.image_type,
        "version": None if v is None else format_version(v),
        "hw_range": None if hw is None else list(hw),
        "sha256": identity.sha256,
    }


def image_report(image: ParsedImage) -> dict[str, Any]:
    """Everything about an image, JSON-ready.

    ``manufacturer_code`` .. ``hw_range`` are what the container's header says (outside
    any signature); ``trusted_identity`` is what the station acts on, ``identity_copies``
    every place the identity is stated, and ``disagreements`` (also among ``problems``)
    where they differ. ``signature_covers`` / ``outside_signature`` say which parts the
    signature protects.
    """
    sig = image.signature
    trusted = trusted_identity(image)
    found = [d.reason for d in disagreements(image)]
    cover = signature_coverage(image)
    if trusted is None:
        payload = f"foreign payload ({why_untrusted(image)})"
    else:
        hw = trusted.hw_range or (0, 0)
        holder = (
            "GBL file whose application carries" if "GBL" in trusted.source else "application with"
        )
        payload = (
            f"{holder} a descriptor (version {dotted_version(trusted.version or 0)}, "
            f"hw {hw[0]}..{hw[1]})"
        )
    return {
        "path": image.path,
        "container": image.container,
        "manufacturer_code": image.manufacturer_code,
        "image_type": image.image_type,
        "file_version": None if image.file_version is None else format_version(image.file_version),
        "hw_range": None if image.hw_min is None else [image.hw_min, image.hw_max],
        "trusted_identity": None if trusted is None else identity_json(trusted),
        "identity_copies": [identity_json(c) for c in claims(image)],
        "disagreements": found,
        "signature_covers": list(cover.covered),
        "outside_signature": list(cover.outside),
        "signature_note": cover.note,
        "fields": {k: _jsonable(v) for k, v in image.fields.items()},
        "segments": [
            {"name": s.name, "address": s.address, "size": len(s.data)} for s in image.segments
        ],
        "compression": _compression(image),
        "sha256": image.sha256,
        "crc32": f"0x{image.crc32:08X}",
        "signature": {
            "status": str(image.signature_status),
            "scheme": sig.scheme if sig else None,
            "signer": sig.signer if sig else None,
        },
        "payload": payload,
        "problems": [*image.problems, *found],
    }


def _identity_text(i: dict[str, Any]) -> str:
    parts = []
    if i["manufacturer_code"] is not None:
        parts.append(f"manufacturer 0x{i['manufacturer_code']:04X}")
    if i["image_type"] is not None:
        parts.append(f"image type 0x{i['image_type']:04X}")
    if i["version"] is not None:
        parts.append(f"version {dotted_text(i['version'])} ({i['version']})")
    if i["hw_range"] is not None:
        parts.append(f"hw {i['hw_range'][0]}..{i['hw_range'][1]}")
    if i["sha256"] is not None:
        parts.append(f"sha256 {i['sha256']}")
    return ", ".join(parts) + f"  ({i['source']})"


def _compression(image: ParsedImage) -> dict[str, Any] | None:
    """How much smaller a compressed GBL's program data is on the wire than in flash."""
    packed = image.fields.get("compressed_bytes")
    unpacked = image.fields.get("decompressed_bytes")
    if not isinstance(packed, int) or not isinstance(unpacked, int):
        return None
    return {
        "method": image.fields.get("compression"),
        "compressed_bytes": packed,
        "decompressed_bytes": unpacked,
        "ratio": round(unpacked / packed, 3) if packed else None,
    }


def _print_report(report: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    rows: list[tuple[str | Text, str]] = []
    for key in ("path", "container", "payload", "sha256", "crc32"):
        rows.append((key, str(report[key])))
    trusted = report["trusted_identity"]
    rows.append(("identity", "none trusted" if trusted is None else _identity_text(trusted)))
    for copy in report["identity_copies"]:
        if copy != trusted:
            rows.append(("  also stated", _identity_text(copy)))
    rows.append(("header says", "untrusted input: only cross-checked against the identity"))
    for key in ("manufacturer_code", "image_type"):
        v = report[key]
        rows.append((f"  {key}", "-" if v is None else f"0x{v:04X}"))
    fv = report["file_version"]
    rows.append(("  file_version", "-" if fv is None else f"{dotted_text(fv)} ({fv})"))
    rows.append(("  hw_range", str(report["hw_range"])))
    sig = report["signature"]
    text = sig["status"] + (f" ({sig['scheme']})" if sig["scheme"] else "")
    rows.append(("signature", text + (f", signed by {sig['signer']}" if sig["signer"] else "")))
    rows.append(("", report["signature_note"]))
    for part in report["signature_covers"]:
        rows.append(("signature covers", part))
    for part in report["outside_signature"]:
        rows.append(("outside signature", part))
    if (packed := report.get("compression")) is not None:
        ratio = "-" if packed["ratio"] is None else f"{packed['ratio']:.2f}:1"
        rows.append(
            (
                "compression",
                f"{packed['method']}: {packed['compressed_bytes']} bytes in the file, "
                f"{packed['decompressed_bytes']} in flash (ratio {ratio})",
            )
        )
    for seg in report["segments"]:
        at = "profile address" if seg["address"] is None else f"0x{seg['address']:08X}"
        rows.append(("segment", f"{seg['name']}: {seg['size']} bytes at {at}"))
    for k, v in report["fields"].items():
        shown = f"{v} (0x{v:X})" if isinstance(v, int) and not isinstance(v, bool) else str(v)
        rows.append((f"  {k}", shown))
    for p in report["problems"]:
        rows.append((Text("problem", style="yellow"), p))
    for name, value in rows:  # values come from the file: shown as they are
        table.add_row(name, literal(value))
    # Full hashes and field values matter more than fitting 80 columns in a log.
    console(width=None if sys.stdout.isatty() else 200).print(table)


# -- image -----------------------------------------------------------------------------------


def cmd_inspect(args: argparse.Namespace, err: Console) -> int:
    image = parse_file(args.file, args.address)
    trust = trust_store(args.trust)
    if trust is not None:
        image = trust.check(image)
    report = image_report(image)
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(report)
    return 0


def cmd_verify(args: argparse.Namespace, err: Console) -> int:
    """Signature, identity (and, with --for-model, catalogue policy) for one file; exit 0/3.

    The identity checked and reported is the trusted one (the signed descriptor); every
    other copy (OTA header, file name, catalogue entry) must agree with it.
    """
    image = parse_file(args.file)
    trust = trust_store(args.trust)
    if trust is None:
        raise ConfigError(
            "no trust store: give --trust DIR (a folder of PEM public keys)",
            hint=f"or create {DEFAULT_TRUST}",
        )
    image = trust.check(image)
    reasons: list[str] = []
    why = signature_refusal(image, allow_unsigned=args.allow_unsigned)
    if why:
        reasons.append(why)
    trusted = trusted_identity(image)
    missing = why_untrusted(image)
    if missing:
        reasons.append(missing)
    found = [d.reason for d in disagreements(image)]
    reasons += found
    verdict: dict[str, Any] = {
        "signature": str(image.signature_status),
        "identity": None if trusted is None else identity_json(trusted),
        "disagreements": found,
    }
    version = None if trusted is None else trusted.version
    if args.for_model:
        cat = _load_catalog(args.catalog)
        model = cat.model(args.for_model)
        plan = cat.plan(model.name, args.hardware, args.running)
        verdict.update(decision=str(plan.decision), plan=plan.reason, behind=plan.behind)
        if plan.decision is Decision.REFUSED:
            reasons.append(plan.reason)
        elif plan.decision is Decision.CURRENT:
            newest = "" if plan.newest is None else f" ({dotted_version(plan.newest.version)})"
            reasons.append(f"the hub already runs the newest release{newest}")
        elif plan.release is not None:
            order = [r.version for r in cat.releases[model.name]]
            if (
                args.running in order
                and version in order
                and order.index(version) < order.index(args.running)
            ):
                reasons.append(
                    f"downgrade: image {dotted_version(version or 0)} is older than "
                    f"the running {dotted_version(args.running)}"
                )
            elif version != plan.release.version:
                have = "none" if version is None else dotted_version(version)
                reasons.append(
                    f"version {have} is not the approved next step "
                    f"{dotted_version(plan.release.version)} ({plan.reason})"
                )
        # The image must be the catalogued file of the release it says it is.
        own = None if version is None else cat.release(model.name, version)
        if own is not None:
            reasons += cat.image_refusals(image, own)
        else:
            reasons += [d.reason for d in disagreements(image, model=model)]
            if version is not None:
                reasons.append(
                    f"version {dotted_version(version)} is not a catalogued release of {model.name}"
                )
        hw, lo_hi = args.hardware, None if trusted is None else trusted.hw_range
        if hw is not None and lo_hi is not None and not lo_hi[0] <= hw <= lo_hi[1]:
            reasons.append(
                f"hardware version {hw} is outside the image's range {lo_hi[0]}..{lo_hi[1]}"
            )
    reasons = list(dict.fromkeys(reasons))  # the same finding from two checks, once
    verdict["ok"] = not reasons
    verdict["reasons"] = reasons
    if args.json:
        print(json.dumps(verdict))
    else:
        out = console()
        sig = image.signature
        signer = f" by {sig.signer}" if sig and sig.signer else ""
        out.print(styled(f"signature: {image.signature_status}{signer}"))
        if trusted is not None:
            out.print(styled(f"identity: {_identity_text(identity_json(trusted))}"))
        if "plan" in verdict:
            behind = verdict["behind"]
            note = f" (n-{behind})" if behind is not None else ""
            out.print(styled(f"catalogue: {verdict['decision']}{note}: {verdict['plan']}"))
        for r in reasons:
            out.print(styled(("REFUSED", "bold yellow"), " ", r))
        if not reasons:
            out.print(styled(("OK", "bold green"), " ", args.file))
    return 0 if not reasons else 3


def _load_private_key(path: str) -> ec.EllipticCurvePrivateKey:
    try:
        data = read_regular_file(path, limit=KEY_FILE_LIMIT, what="signing key", error=ConfigError)
        key = serialization.load_pem_private_key(data, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot load signing key {path}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path} is not an ECDSA private key")
    return key


def cmd_keygen(args: argparse.Namespace, err: Console) -> int:
    """A P-256 key pair for demos and tests: private key to --private, public to --public."""
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = Path(args.private), Path(args.public)
    private.parent.mkdir(parents=True, exist_ok=True)
    public.parent.mkdir(parents=True, exist_ok=True)
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    print(literal(f"private key {private} (keep it off the bench), public key {public}"))
    return 0


def cmd_build(args: argparse.Namespace, err: Console) -> int:
    """Wrap a payload into a GBCS OTA Upgrade Image or a Zigbee OTA file."""
    if args.demo_version is not None:
        payload = demo.demo_payload(
            args.demo_version,
            size=args.size,
            image_type=args.image_type or demo.DEMO_IMAGE_TYPE,
        )
        ident = {
            "manufacturer_code": demo.DEMO_MANUFACTURER,
            "image_type": demo.DEMO_IMAGE_TYPE,
            "file_version": args.demo_version,
            "hw_min": demo.DEMO_HW_MIN,
            "hw_max": demo.DEMO_HW_MAX,
        }
    else:
        src = parse_file(args.payload, args.address)
        payload = src.payload
        ident = {
            "manufacturer_code": src.manufacturer_code,
            "image_type": src.image_type,
            "file_version": src.file_version,
            "hw_min": src.hw_min,
            "hw_max": src.hw_max,
        }
    for key in ident:
        given = getattr(args, key)
        if given is not None:
            ident[key] = given
        if ident[key] is None:
            raise ConfigError(
                f"--{key.replace('_', '-')} is needed: the payload carries no descriptor"
            )
    sign = ecdsa_p256_sign(_load_private_key(args.sign_key)) if args.sign_key else None
    if args.compress is not None and args.format != "gbl":
        raise ConfigError("--compress is for --format gbl only")
    if args.format == "gbl":
        if sign is not None:
            raise ConfigError("GBL signing is not done by this tool; use --format gbcs")
        address = args.address if args.address is not None else demo.DEMO_LOAD_ADDRESS
        if args.demo_version is not None:
            payload = demo.demo_payload(
                args.demo_version,
                size=args.size,
                load_address=address,
                image_type=int(ident["image_type"] or 0),
            )
        data = build_gbl(
            [(address, payload)],
            app_version=int(ident["file_version"] or 0),
            compression=args.compress,
        )
    elif args.format == "gbcs":
        data = build_gbcs_image(
            payload,
            manufacturer_code=int(ident["manufacturer_code"] or 0),
            image_type=int(ident["image_type"] or 0),
            file_version=int(ident["file_version"] or 0),
            hw_min=int(ident["hw_min"] or 0),
            hw_max=int(ident["hw_max"] or 0),
            sign=sign,
        )
    else:
        if sign is not None:
            raise ConfigError("Zigbee OTA files are not signed by this tool; use --format gbcs")
        data = build_zigbee_ota(
            [(0x0000, payload)],
            manufacturer_code=int(ident["manufacturer_code"] or 0),
            image_type=int(ident["image_type"] or 0),
            file_version=int(ident["file_version"] or 0),
            hw_range=(int(ident["hw_min"] or 0), int(ident["hw_max"] or 0)),
        )
    out = Path(args.output)
    if out.is_dir():
        parsed = parse_file_bytes(data)
        out = out / gbcs_file_name(parsed)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    image = parse_file(out)
    print(
        f"{literal(out)}: {image.container}, version {dotted_version(image.file_version or 0)}, "
        f"{len(image.payload)} bytes payload, sha256 {image.sha256}, "
        f"signature {'present' if image.signature else 'none (unsigned)'}"
    )
    return 0


def parse_file_bytes(data: bytes) -> ParsedImage:
    """Parse in-memory bytes (used to name a file before it is written)."""
    from firmware_images.loader import parse_bytes

    return parse_bytes(data)


# -- catalog ---------------------------------------------------------------------------------


def _load_catalog(folder: str | None) -> Catalog:
    """The catalogue named by ``--catalog``, else the default one.

    Without ``--catalog`` and with no default catalogue the user has not met the folder
    named in the error yet, so it says what to give and how to make one.

    Raises:
        ConfigError: no catalogue (see :meth:`Catalog.load` for a bad one).
    """
    if folder is None and not (DEFAULT_CATALOG / INDEX).exists():
        raise ConfigError(
            f"this needs a catalogue: give --catalog DIR (there is none at {DEFAULT_CATALOG})",
            hint="make one with 'station catalog add FILE --model M --catalog DIR "
            f"--trust DIR'; after 'station demo' there is {DATA / 'demo' / 'catalog'}",
        )
    return Catalog.load(folder or DEFAULT_CATALOG)


def cmd_catalog_list(args: argparse.Namespace, err: Console) -> int:
    cat = _load_catalog(args.catalog)
    if args.json:
        print(
            json.dumps(
                {
                    "models": [vars(m) for m in cat.models.values()],
                    "releases": [
                        {
                            "model": r.model,
                            "version": r.version_text,
                            "file": r.file,
                            "sha256": r.sha256,
                            "from": None
                            if r.predecessors is None
                            else [format_version(v) for v in r.predecessors],
                        }
                        for rels in cat.releases.values()
                        for r in rels
                    ],
                }
            )
        )
        return 0
    out = console()
    for m in cat.models.values():
        out.print(
            styled(
                (literal(m.name), "bold"),
                f" (profile {m.profile}): manufacturer 0x{m.manufacturer_code:04X}, "
                f"image type 0x{m.image_type:04X}, hardware {m.hw_min}..{m.hw_max}",
            )
        )
        rels = cat.releases[m.name]
        for i, r in enumerate(rels):
            behind = len(rels) - 1 - i
            came = (
                "any earlier"
                if r.predecessors is None
                else ", ".join(dotted_version(v) for v in r.predecessors)
            )
            out.print(
                styled(f"  {dotted_version(r.version):<11} n-{behind:<2} from: {came:<24} {r.file}")
            )
    return 0


def cmd_catalog_add(args: argparse.Namespace, err: Console) -> int:
    """Add a file as a model's newest release: its identity is the signed descriptor's, and
    every other copy (OTA header, file name) must agree before anything is written."""
    cat = Catalog.load(args.catalog or DEFAULT_CATALOG, create=True)
    image = parse_file(args.file)
    check_identity(image)  # before the header's fields name a model or the stored file
    if args.model not in cat.models:
        trusted = trusted_identity(image)
        if trusted is None or trusted.manufacturer_code is None or trusted.image_type is None:
            raise ImageError(f"{args.file}: {why_untrusted(image)}")
        hw = trusted.hw_range or (0, 0)
        hw_min = hw[0] if args.hw_min is None else args.hw_min
        hw_max = hw[1] if args.hw_max is None else args.hw_max
        if args.max_image_size is None:
            raise ConfigError(f"model {args.model!r} is new: give --max-image-size")
        from firmware_images.catalog import HubModel

        cat.models[args.model] = HubModel(
            args.model,
            args.profile or args.model,
            trusted.manufacturer_code,
            trusted.image_type,
            hw_min,
            hw_max,
            args.max_image_size,
        )
        cat.releases[args.model] = []
    trust = trust_store(args.trust)
    if trust is not None:
        image = trust.check(image)
        if image.signature_status is not SigStatus.VALID and not args.allow_unsigned:
            raise ImageError(
                f"{args.file}: signature {image.signature_status}; the catalogue takes signed "
                "images only",
                hint=signature_hint(image, trust)
                if image.signature_status is SigStatus.INVALID
                else "sign it, or pass --allow-unsigned (recorded in the catalogue check)",
            )
    preds = None if args.from_versions is None else tuple(args.from_versions)
    name = gbcs_file_name(image) if image.container == "gbcs-ota" else Path(args.file).name
    rel = cat.add(image, Path(args.file), model_name=args.model, predecessors=preds, file_name=name)
    print(literal(f"added {rel.model} {dotted_version(rel.version)} as {cat.root / rel.file}"))
    return 0


def cmd_catalog_check(args: argparse.Namespace, err: Console) -> int:
    """Every release: file present, parses, signature valid, and every copy of its identity
    (descriptor, OTA header, file name, catalogue entry) agreeing; exit 1 if any is BAD."""
    cat = _load_catalog(args.catalog)
    trust = trust_store(args.trust)
    bad = 0
    out = console()
    for rels in cat.releases.values():
        for r in rels:
            problems: list[str] = []
            try:
                image = cat.load_release(r)
                problems += cat.image_refusals(image, r)
                if trust is None:
                    problems.append("no trust store to check the signature against")
                else:
                    image = trust.check(image)
                    why = signature_refusal(image)
                    if why:
                        problems.append(why)
            except ImageError as exc:
                problems.append(str(exc))
            bad += bool(problems)
            status: tuple[Part, ...] = (
                (("ok", "green"),) if not problems else (("BAD", "red"), " ", "; ".join(problems))
            )
            out.print(styled(f"{r.model} {dotted_version(r.version)} {r.file}: ", *status))
    return 0 if bad == 0 else 1


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``image`` and ``catalog`` with the station's parser."""
    p = sub.add_parser("image", help="inspect, verify and build firmware images")
    isub = p.add_subparsers(dest="image_command", required=True, metavar="ACTION")

    q = isub.add_parser(
        "inspect",
        help="every field, hashes, signature status, payload kind and problems of a file",
        description="Parse any supported file (GBCS/Zigbee OTA, GBL, DFU/DfuSe, Intel HEX, "
        "S-record, raw binary) and show everything it holds.",
    )
    q.add_argument("file")
    q.add_argument("--address", type=_int, help="load address of a raw binary")
    q.add_argument("--trust", help=f"trust store folder (default {DEFAULT_TRUST} if present)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_inspect)

    q = isub.add_parser(
        "verify",
        help="check a file's signature and, for a hub, the catalogue's policy",
        description="Exit 0 when the image is signed by a trusted key (and, with "
        "--for-model, is the approved next step for a hub with that hardware and running "
        "version); exit 3 with the reasons otherwise.",
    )
    q.add_argument("file")
    q.add_argument("--trust", help=f"trust store folder (default {DEFAULT_TRUST})")
    q.add_argument("--catalog", help=f"catalogue folder (default {DEFAULT_CATALOG})")
    q.add_argument(
        "--for-model", help="hub model, as named in the catalogue (needs a catalogue: --catalog)"
    )
    q.add_argument("--hardware", type=_int, help="the hub's hardware version")
    q.add_argument("--running", type=_version, help="the hub's running version")
    q.add_argument("--allow-unsigned", action="store_true", help="accept an unsigned image")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_verify)

    q = isub.add_parser(
        "build",
        help="wrap a payload into a GBCS OTA Upgrade Image or a Zigbee OTA file",
        description="Used for demos and tests. The identity fields default to the "
        "payload's application descriptor.",
    )
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--payload", help="payload file (raw with --address, HEX, S-record)")
    src.add_argument("--demo-version", type=_version, help="build a demo application payload")
    q.add_argument(
        "--address", type=_int, help="load address of a raw payload file, or of a GBL's data"
    )
    q.add_argument("--size", type=_int, default=64 * 1024, help="demo payload size")
    q.add_argument(
        "--format",
        choices=["gbcs", "zigbee", "gbl"],
        default="gbcs",
        help="gbcs (signable), zigbee, or gbl for Gecko hubs (with --address, e.g. 0x4000)",
    )
    q.add_argument(
        "--compress",
        choices=["lz4", "lzma"],
        help="GBL only: LZ4- or LZMA-compress the program data (for bootloaders built with "
        "that decompressor)",
    )
    q.add_argument("--manufacturer-code", type=_int)
    q.add_argument("--image-type", type=_int)
    q.add_argument("--file-version", type=_version)
    q.add_argument("--hw-min", type=_int)
    q.add_argument("--hw-max", type=_int)
    q.add_argument("--sign-key", help="PEM private key to sign with (GBCS only)")
    q.add_argument("-o", "--output", required=True, help="file, or a folder for the GBCS name")
    q.set_defaults(func=cmd_build)

    q = isub.add_parser("keygen", help="make an ECDSA P-256 key pair for demos and tests")
    q.add_argument("--private", required=True, help="where to write the private key")
    q.add_argument("--public", required=True, help="where to write the public key")
    q.set_defaults(func=cmd_keygen)

    p = sub.add_parser("catalog", help="the catalogue of approved releases and pathways")
    csub = p.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    q = csub.add_parser("list", help="models, releases in order, pathways")
    q.add_argument("--catalog", help=f"catalogue folder (default {DEFAULT_CATALOG})")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_catalog_list)
    q = csub.add_parser("add", help="add an image as a model's newest release")
    q.add_argument("file")
    q.add_argument("--model", required=True)
    q.add_argument(
        "--from",
        dest="from_versions",
        type=_version,
        nargs="+",
        help="versions allowed to move to this release (default: any earlier one)",
    )
    q.add_argument("--catalog", help=f"catalogue folder (default {DEFAULT_CATALOG})")
    q.add_argument("--trust", help="trust store to check the signature against")
    q.add_argument("--allow-unsigned", action="store_true")
    q.add_argument("--profile", help="hub profile of a new model (default: the model name)")
    q.add_argument("--hw-min", type=_int, help="of a new model (default: the image's)")
    q.add_argument("--hw-max", type=_int, help="of a new model (default: the image's)")
    q.add_argument("--max-image-size", type=_int, help="bytes of flash of a new model")
    q.set_defaults(func=cmd_catalog_add)
    q = csub.add_parser("check", help="check every release file against the catalogue")
    q.add_argument("--catalog", help=f"catalogue folder (default {DEFAULT_CATALOG})")
    q.add_argument("--trust", help=f"trust store folder (default {DEFAULT_TRUST})")
    q.set_defaults(func=cmd_catalog_check)
