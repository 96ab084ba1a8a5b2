"""Hostile input files end in a one-line refusal, within a memory ceiling and a deadline.

Each case runs the parse in a child process whose address space is capped with
``RLIMIT_AS`` (:data:`CEILING`; the interpreter with cryptography, bincopy and the station's
CLI imported takes under 80 MiB of it), so a parser that allocates in proportion to what a
file *claims* rather than what it *holds* dies with MemoryError instead of passing. The
deadline is the subprocess timeout: a parse that hangs (a FIFO) or runs quadratic fails.
The same cases go through the ``station`` command: ``error: ...`` on one line, exit 2.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import bincopy
import pytest

from firmware_images.build import demo_payload
from firmware_images.catalog import Catalog
from firmware_images.dfu import MAX_ELEMENTS as DFU_MAX_ELEMENTS
from firmware_images.dfu import dfu_suffix_crc
from firmware_images.gbl import MAX_TAGS as GBL_MAX_TAGS
from firmware_images.gbl import TAG_METADATA, build_gbl
from firmware_images.zigbee import build_zigbee_ota
from station.cli import Exit, main
from station.demo import prepare_demo_catalog

CEILING = 512 << 20
DEADLINE_S = 60.0
ADDR = 0x0800_0000

_PARSE = """
import sys
from drivers.errors import StationError
from firmware_images.loader import parse_file
try:
    image = parse_file(sys.argv[1])
except StationError as exc:
    print(f"refused: {exc}")
    raise SystemExit(3)
print(f"parsed: {image.container}, {len(image.segments)} segment(s)")
"""
#: ``station flash``'s load for a demo-an3155 hub (flash 0x08000000..0x08080000).
_LOAD_FOR_HUB = """
import sys
from drivers.errors import StationError
from firmware_images.loader import load_image
try:
    load_image(sys.argv[1], default_address=0x08000000, flash=(0x08000000, 0x08080000))
except StationError as exc:
    print(f"refused: {exc}")
    raise SystemExit(3)
print("loaded")
"""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CEILING, CEILING))


def run_limited(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code args`` under the memory ceiling and the deadline."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        preexec_fn=_limit_memory,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


def station_limited(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``station`` command under the memory ceiling and the deadline."""
    return run_limited("import sys; from station.cli import main; sys.exit(main())", *args)


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The child's one line of output, after checking it refused cleanly (exit 3)."""
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def station_error(result: subprocess.CompletedProcess[str]) -> str:
    """The ``station`` child's one-line error, after checking it exited 2 cleanly.

    Its standard output may hold what it did before (``catalog check``: the good releases).
    """
    assert result.returncode == Exit.BAD_INPUT, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def cli_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``station args`` in this process; return its one-line error after checking exit 2."""
    code = main(list(args))
    captured = capsys.readouterr()
    assert code == Exit.BAD_INPUT, captured.out + captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


@pytest.fixture
def good_hex(tmp_path: Path) -> Path:
    bf = bincopy.BinFile()
    bf.add_binary(demo_payload(0x01050000, size=8192), address=ADDR)
    path = tmp_path / "app.hex"
    path.write_text(bf.as_ihex())
    return path


# -- special files and sizes ------------------------------------------------------------------


def test_link_to_dev_zero_as_an_image(tmp_path: Path) -> None:
    path = tmp_path / "app.hex"
    path.symlink_to("/dev/zero")
    line = refusal(run_limited(_PARSE, str(path)))
    assert "app.hex (a link to /dev/zero) is a character device" in line


def test_fifo_as_an_image_does_not_hang(tmp_path: Path) -> None:
    path = tmp_path / "app.zigbee"
    os.mkfifo(path)
    line = refusal(run_limited(_PARSE, str(path)))
    assert "app.zigbee is a FIFO" in line


def test_a_file_far_over_the_cap_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.bin"
    with path.open("wb") as f:
        f.truncate(3 << 30)  # sparse: 3 GiB claimed, nothing on disk
    line = refusal(run_limited(_PARSE, str(path)))
    assert f"huge.bin is {3 << 30} bytes, more than the {32 << 20} accepted" in line


def _hostile_image(folder: Path, kind: str, good_hex: Path) -> tuple[Path, str]:
    """A hostile image file of ``kind`` in ``folder``, and what its refusal says."""
    path = folder / f"{kind}.zigbee"
    if kind == "zero":
        path.symlink_to("/dev/zero")
        return path, "(a link to /dev/zero) is a character device"
    if kind == "fifo":
        os.mkfifo(path)
        return path, "is a FIFO"
    if kind == "directory":
        path.mkdir()
        return path, "is a directory"
    if kind == "sparse":
        with path.open("wb") as f:
            f.truncate(1 << 33)
        return path, "more than the 33554432 accepted"
    if kind == "ota-bomb":
        return _ota_bomb(path, 4 << 20), "more than 1024 sub-elements"
    return _with_stray(good_hex, 0xFFFF_FFF0), "data at 0xFFFFFFF0..0x100000000 is outside"


_IMAGE_KINDS = ["zero", "fifo", "directory", "sparse", "ota-bomb", "hex-stray"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["inspect", "verify", "flash"])
@pytest.mark.parametrize("kind", _IMAGE_KINDS)
def test_hostile_image_files_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], good_hex: Path, command: str, kind: str
) -> None:
    """``error: ...`` on one line, exit 2, for every hostile image and command.

    Except a HEX file with a stray record under ``inspect``: it is listed, not refused
    (see ``firmware_images.loader._parse_text``), and without a hub its span is all there is.
    """
    path, want = _hostile_image(tmp_path, kind, good_hex)
    (tmp_path / "trust").mkdir()
    args = {
        "inspect": ["image", "inspect"],
        "verify": ["image", "verify", "--trust", str(tmp_path / "trust")],
        "flash": ["flash", "--port", "/dev/null", "--profile", "demo-an3155", "--allow-unsigned"],
    }[command]
    if kind == "hex-stray" and command != "flash":
        assert main([*args, str(path)]) in (Exit.PASSED, Exit.REFUSED)  # unsigned: refused
        assert "kept apart" in capsys.readouterr().out or command == "verify"
        return
    line = cli_error(capsys, *args, str(path))
    assert str(path) in line and want in line


def test_cli_refuses_under_the_memory_ceiling(tmp_path: Path) -> None:
    path = tmp_path / "app.hex"
    path.symlink_to("/dev/zero")
    line = station_error(station_limited("image", "inspect", str(path)))
    assert line.startswith("error: image file") and "character device" in line


# -- Intel HEX / S-record: one stray record far from the rest -----------------------------------


def _with_stray(good_hex: Path, stray: int) -> Path:
    bf = bincopy.BinFile(str(good_hex))
    bf.add_binary(b"\x5a" * 16, address=stray)
    path = good_hex.with_name(f"stray-{stray:08x}.hex")
    path.write_text(bf.as_ihex())
    return path


@pytest.mark.parametrize("stray", [0x1FFF_7800, 0xFFFF_FFF0])
def test_hex_stray_record_is_refused_for_a_hub(good_hex: Path, stray: int) -> None:
    path = _with_stray(good_hex, stray)
    assert path.stat().st_size < 24 << 10
    line = refusal(run_limited(_LOAD_FOR_HUB, str(path)))
    assert line == (
        f"refused: {path}: data at 0x{stray:08X}..0x{stray + 16:08X} is outside the hub's "
        "flash 0x08000000..0x08080000 (the file holds data for another memory area (option "
        "bytes, OTP, another chip): use a file made for this hub model's flash)"
    )


@pytest.mark.parametrize("stray", [0x1FFF_7800, 0xFFFF_FFF0])
def test_hex_stray_record_is_inspected_without_filling(good_hex: Path, stray: int) -> None:
    result = run_limited(_PARSE, str(_with_stray(good_hex, stray)))
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "parsed: ihex, 2 segment(s)\n",
        "",
    )


def test_hex_stray_record_through_the_cli(
    good_hex: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _with_stray(good_hex, 0x1FFF_7800)
    flash = ["flash", "--port", "/dev/null", "--profile", "demo-an3155", "--allow-unsigned"]
    line = cli_error(capsys, *flash, str(path))
    assert "data at 0x1FFF7800..0x1FFF7810 is outside the hub's flash" in line
    assert main(["image", "inspect", "--json", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["address"] for s in report["segments"]] == [ADDR, 0x1FFF_7800]
    assert "kept apart" in report["problems"][0]


# -- catalogue files -------------------------------------------------------------------------

_LOAD_RELEASE = """
import sys
from drivers.errors import StationError
from firmware_images.catalog import Catalog
from firmware_images.dfu import MAX_ELEMENTS as DFU_MAX_ELEMENTS
from firmware_images.dfu import dfu_suffix_crc
from firmware_images.gbl import MAX_TAGS as GBL_MAX_TAGS
from firmware_images.gbl import TAG_METADATA, build_gbl
from firmware_images.zigbee import build_zigbee_ota
catalog = Catalog.load(sys.argv[1])
try:
    catalog.load_release(catalog.releases["demo-an3155"][-1])
except StationError as exc:
    print(f"refused: {exc}")
    raise SystemExit(3)
print("loaded")
"""


@pytest.fixture(scope="module")
def demo_catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(catalogue folder, trust store folder) of signed demo releases."""
    cat, trust = prepare_demo_catalog(tmp_path_factory.mktemp("demo"), size=4096)
    return cat.root, Path(trust.source)


def _hostile_catalogue(demo_catalog: tuple[Path, Path], folder: Path, kind: str) -> Path:
    """A copy of the demo catalogue whose newest release file is a link to /dev/zero or a FIFO."""
    shutil.copytree(demo_catalog[0], folder)
    newest = Catalog.load(folder).releases["demo-an3155"][-1]
    (folder / newest.file).unlink()
    if kind == "zero":
        (folder / newest.file).symlink_to("/dev/zero")
    else:
        os.mkfifo(folder / newest.file)
    return folder


@pytest.mark.parametrize(
    ("kind", "want"),
    [("zero", "resolves to /dev/zero, outside the catalogue folder"), ("fifo", "is a FIFO")],
)
def test_hostile_catalogue_file(
    demo_catalog: tuple[Path, Path], tmp_path: Path, kind: str, want: str
) -> None:
    folder = _hostile_catalogue(demo_catalog, tmp_path / "cat", kind)
    line = refusal(run_limited(_LOAD_RELEASE, str(folder)))
    assert line.startswith("refused: catalogue") and want in line


@pytest.mark.parametrize("kind", ["zero", "fifo"])
def test_hostile_catalogue_file_through_catalog_check(
    demo_catalog: tuple[Path, Path], tmp_path: Path, kind: str
) -> None:
    folder = _hostile_catalogue(demo_catalog, tmp_path / "cat", kind)
    args = ("catalog", "check", "--catalog", str(folder), "--trust", str(demo_catalog[1]))
    assert station_error(station_limited(*args)).startswith("error: catalogue")


@pytest.mark.parametrize("value", ["/etc/passwd", "../../etc/passwd"])
def test_catalogue_naming_a_file_outside_it(
    demo_catalog: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    folder = tmp_path / "cat"
    shutil.copytree(demo_catalog[0], folder)
    index = folder / "catalog.toml"
    newest = Catalog.load(folder).releases["demo-an3155"][-1]
    index.write_text(index.read_text().replace(newest.file, value))
    line = cli_error(capsys, "catalog", "check", "--catalog", str(folder))
    assert f"'file' {value!r}" in line and "must be inside the catalogue folder" in line
    assert line.startswith(f"error: {index}:")
    flash = ("flash", "--port", "/dev/null", "--profile", "demo-an3155", "--catalog", str(folder))
    assert cli_error(capsys, *flash) == line


# -- trust store keys ------------------------------------------------------------------------

_LOAD_TRUST = """
import sys
from drivers.errors import StationError
from firmware_images.trust import TrustStore
try:
    TrustStore.from_dir(sys.argv[1])
except StationError as exc:
    print(f"refused: {exc}")
    raise SystemExit(3)
print("loaded")
"""


def _hostile_trust(demo_catalog: tuple[Path, Path], folder: Path, kind: str) -> Path:
    shutil.copytree(demo_catalog[1], folder)
    if kind == "zero":
        (folder / "extra.pem").symlink_to("/dev/zero")
    else:
        os.mkfifo(folder / "extra.pem")
    return folder


@pytest.mark.parametrize(
    ("kind", "want"), [("zero", "(a link to /dev/zero) is a character device"), ("fifo", "FIFO")]
)
def test_hostile_trust_key(
    demo_catalog: tuple[Path, Path], tmp_path: Path, kind: str, want: str
) -> None:
    folder = _hostile_trust(demo_catalog, tmp_path / "trust", kind)
    line = refusal(run_limited(_LOAD_TRUST, str(folder)))
    assert line.startswith(f"refused: trust store file {folder / 'extra.pem'}") and want in line


@pytest.mark.parametrize("kind", ["zero", "fifo"])
def test_hostile_trust_key_through_the_cli(
    demo_catalog: tuple[Path, Path], tmp_path: Path, kind: str
) -> None:
    folder = _hostile_trust(demo_catalog, tmp_path / "trust", kind)
    image = next(demo_catalog[0].glob("*.zigbee"))
    for command in ("inspect", "verify"):
        line = station_error(station_limited("image", command, str(image), "--trust", str(folder)))
        assert line.startswith("error: trust store file")
    line = station_error(
        station_limited(
            "catalog", "check", "--catalog", str(demo_catalog[0]), "--trust", str(folder)
        )
    )
    assert line.startswith("error: trust store file")


# -- Zigbee OTA sub-element bomb ---------------------------------------------------------------


def _ota_bomb(path: Path, size: int) -> Path:
    """A Zigbee OTA file of ``size`` bytes: one upgrade image, then empty sub-elements."""
    head = build_zigbee_ota(
        [(0, b"firmware")], manufacturer_code=0x1234, image_type=1, file_version=1
    )
    count = (size - len(head)) // 6
    data = bytearray(head + struct.pack("<HI", 0x0000, 0) * count)
    data[52:56] = struct.pack("<I", len(data))
    path.write_bytes(data)
    return path


_PARSE_BYTES = """
import sys
from pathlib import Path
from drivers.errors import StationError
from firmware_images.loader import parse_bytes
data = Path(sys.argv[1]).read_bytes()  # past the file cap on purpose: the parser's own limits
try:
    parse_bytes(data, sys.argv[1])
except StationError as exc:
    print(f"refused: {exc}")
    raise SystemExit(3)
print("parsed")
"""


def test_ota_bomb_of_48_mb_is_refused_by_the_parser(tmp_path: Path) -> None:
    path = _ota_bomb(tmp_path / "bomb.zigbee", 48_000_000)  # 8 million sub-elements
    line = refusal(run_limited(_PARSE_BYTES, str(path)))
    assert line.startswith(f"refused: {path}: zigbee-ota: more than 1024 sub-elements")


def test_ota_bomb_under_the_file_cap_through_the_cli(tmp_path: Path) -> None:
    path = _ota_bomb(tmp_path / "bomb.zigbee", 30 << 20)
    trust = tmp_path / "trust"
    trust.mkdir()
    for command in (["image", "inspect"], ["image", "verify", "--trust", str(trust)]):
        line = station_error(station_limited(*command, str(path)))
        assert line.startswith(f"error: {path}: zigbee-ota: more than 1024 sub-elements")
    big = _ota_bomb(tmp_path / "big.zigbee", 48_000_000)
    line = station_error(station_limited("image", "inspect", str(big)))
    size = big.stat().st_size
    assert line == f"error: image file {big} is {size} bytes, more than the 33554432 accepted"


# -- GBL tags and DfuSe elements ---------------------------------------------------------------


def test_gbl_tag_bomb(tmp_path: Path) -> None:
    path = tmp_path / "bomb.gbl"
    head = build_gbl([(0x4000, b"app")])[:-12]  # without END
    path.write_bytes(head + struct.pack("<II", TAG_METADATA, 0) * ((30 << 20) // 8))
    line = refusal(run_limited(_PARSE, str(path)))
    assert line.startswith(f"refused: {path}: GBL file has more than {GBL_MAX_TAGS} tags")


def test_large_gbl_parses_under_the_ceiling(tmp_path: Path) -> None:
    # 24 MiB in 6144 program data tags, merged back into one segment (joined once).
    path = tmp_path / "big.gbl"
    path.write_bytes(build_gbl([(0, bytes(range(256)) * (24 << 12))]))
    result = run_limited(_PARSE, str(path))
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "parsed: gbl, 1 segment(s)\n",
        "",
    )


def test_dfuse_element_bomb(tmp_path: Path) -> None:
    count = (30 << 20) // 8
    target = struct.pack("<6sBI255sII", b"Target", 0, 0, b"", 8 * count, count)
    body = target + struct.pack("<II", 0x0800_0000, 0) * count
    body = struct.pack("<5sBIB", b"DfuSe", 1, 11 + len(body), 1) + body
    head = body + struct.pack("<HHHH3sB", 0xFFFF, 0xDF11, 0x0483, 0x011A, b"UFD", 16)
    path = tmp_path / "bomb.dfu"
    path.write_bytes(head + struct.pack("<I", dfu_suffix_crc(head)))
    line = refusal(run_limited(_PARSE, str(path)))
    assert line.startswith(f"refused: {path}: DfuSe file has more than {DFU_MAX_ELEMENTS} elements")
