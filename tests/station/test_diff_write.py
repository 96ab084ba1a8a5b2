"""Write only what changed: a skipped page is never left unverified.

End to end on simulated AN3155 hubs (``sim://``, in this process, unpaced) whose flash is set
up by hand below the line the station talks over: whatever the hub held, the job ends with
the flash holding the image, and the pages it left alone are exactly those that already
held it. A hub that answers two ways, or cannot answer at all (no Get Checksum), is written.
"""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import bincopy
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from drivers.crc import stm32_crc
from drivers.page_diff import crc_plan, expected_pages, readback_plan, runs_of
from firmware_images.build import (
    DEMO_HW_MAX,
    DEMO_HW_MIN,
    DEMO_IMAGE_TYPE,
    DEMO_LOAD_ADDRESS,
    DEMO_MANUFACTURER,
    demo_payload,
    demo_release,
)
from firmware_images.descriptor import seal_payload
from firmware_images.loader import LoadedImage, load_image
from sim.an3155 import An3155Hub
from sim.urlhandler import protocol_sim, register
from station.demo import prepare_demo_catalog
from station.flash import FlashOutcome, Policy, Result, catalog_chooser, flash_hub
from station.profiles import load_profile

from ..conftest import NEW, OLD

#: An unpaced hub's application starts at once; a flash whose descriptor claims a version
#: its pages do not hold never starts, and the job need not wait long to learn so.
PROFILE = dataclasses.replace(load_profile("demo-an3155"), boot_timeout_s=0.3)
PAGE = PROFILE.page_size
BASE = DEMO_LOAD_ADDRESS
#: Write even a hub that already runs the image's version: the diff is what is under test.
FORCE = Policy(allow_unsigned=True, force=True)
_urls = iter(range(1, 1_000_000))


@pytest.fixture(autouse=True)
def _sim_hubs() -> Iterator[None]:
    register()
    protocol_sim.forget_hubs()
    yield
    protocol_sim.forget_hubs()


def payload(body: bytes) -> bytes:
    return seal_payload(
        body,
        manufacturer_code=DEMO_MANUFACTURER,
        image_type=DEMO_IMAGE_TYPE,
        firmware_version=NEW,
        hw_min=DEMO_HW_MIN,
        hw_max=DEMO_HW_MAX,
    )


def as_image(data: bytes, folder: Path) -> LoadedImage:
    hexfile = bincopy.BinFile()
    hexfile.add_binary(data, address=BASE)
    path = folder / f"image-{next(_urls)}.hex"
    path.write_text(hexfile.as_ihex())
    return load_image(path)


class Watched:
    """A simulated hub, its flash as the test left it, and which pages the job touched."""

    def __init__(self, flash: bytes, *, options: str = "") -> None:
        self.url = f"sim://an3155?slot={next(_urls)}&unpaced{options}"
        self.hub: An3155Hub = protocol_sim.device(self.url)
        self.hub.flash.data[: len(flash)] = flash
        self.before = bytes(self.hub.flash.data)
        self.touched: set[int] = set()
        erase, program = self.hub.flash.erase_page, self.hub.flash.program

        def erase_page(page: int) -> None:
            self.touched.add(page)
            erase(page)

        def program_(address: int, data: bytes) -> bool:
            self.touched.update(self.hub.flash.pages_of(address, len(data)))
            return program(address, data)

        self.hub.flash.erase_page = erase_page  # type: ignore[method-assign]
        self.hub.flash.program = program_  # type: ignore[method-assign]

    def page(self, n: int, *, before: bool = False) -> bytes:
        data = self.before if before else bytes(self.hub.flash.data)
        return data[n * PAGE : (n + 1) * PAGE]

    def flash(self, image: LoadedImage) -> FlashOutcome:
        return flash_hub(self.url, PROFILE, image, policy=FORCE)


def check_honest(hub: Watched, image: LoadedImage, out: FlashOutcome) -> None:
    """Passed, the flash holds what a full write leaves, and every page left alone already
    held it (and every page that held it was left alone: the hub here answers truly)."""
    assert out.result is Result.PASSED, out.message
    expected = expected_pages(image.data + b"\xff" * (-len(image.data) % 4), PAGE)
    pages = len(expected) // PAGE
    assert bytes(hub.hub.flash.data[: len(expected)]) == expected
    assert bytes(hub.hub.flash.data[len(expected) :]) == hub.before[len(expected) :]
    left = {n for n in range(pages) if n not in hub.touched}
    held = {n for n in range(pages) if hub.page(n, before=True) == expected[n * PAGE :][:PAGE]}
    assert left == held
    assert (out.pages_written, out.pages_skipped) == (pages - len(left), len(left))


PAGE_STATES = st.sampled_from(["same", "erased", "random", "one-bit", "tail"])


PROPERTY = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FLASHES = dict(
    size=st.integers(600, 6 * PAGE).map(lambda n: n // 4 * 4),
    states=st.lists(PAGE_STATES, min_size=8, max_size=8),
    seed=st.integers(0, 2**32 - 1),
)


def flash_over(size: int, states: list[str], seed: int, tmp_path: Path) -> None:
    """Flash a random image over a flash whose pages are in ``states`` and check honesty."""
    rng = random.Random(seed)
    image = as_image(payload(rng.randbytes(size)), tmp_path)
    expected = expected_pages(image.data, PAGE)
    flash = bytearray()
    for n, state in enumerate(states):
        page = bytearray(expected[n * PAGE : (n + 1) * PAGE].ljust(PAGE, b"\xff"))
        if state == "erased":
            page = bytearray(b"\xff" * PAGE)
        elif state == "random":
            page = bytearray(rng.randbytes(PAGE))
        elif state == "one-bit":
            page[rng.randrange(PAGE)] ^= 1 << rng.randrange(8)
        elif state == "tail" and n * PAGE + PAGE > len(image.data):
            page[-4:] = b"\x00\x00\x00\x00"  # bytes past the image, where a full write erases
        flash += page
    hub = Watched(bytes(flash))
    check_honest(hub, image, hub.flash(image))


@settings(max_examples=6, **PROPERTY)
@given(**FLASHES)
def test_any_flash_ends_holding_the_image_and_only_pages_that_held_it_are_skipped(
    size: int, states: list[str], seed: int, tmp_path: Path
) -> None:
    flash_over(size, states, seed, tmp_path)


@settings(max_examples=40, **PROPERTY)
@given(**FLASHES)
@pytest.mark.slow
def test_many_flashes_end_holding_the_image(
    size: int, states: list[str], seed: int, tmp_path: Path
) -> None:
    flash_over(size, states, seed, tmp_path)


def test_a_release_that_changed_a_few_pages_writes_only_those(tmp_path: Path) -> None:
    old = demo_payload(0x0101_0000, size=16 * PAGE)
    new = demo_release(old, NEW, changed=3, page_size=PAGE)
    hub = Watched(old)
    out = hub.flash(as_image(new, tmp_path))
    check_honest(hub, as_image(new, tmp_path), out)
    assert (out.pages_written, out.pages_skipped, out.bytes_written) == (3, 13, 3 * PAGE)
    assert out.verify_method == "device-crc"  # the whole image is verified, as ever


def test_a_page_that_answers_otherwise_when_asked_again_is_written(tmp_path: Path) -> None:
    """A page whose second CRC differs from its first (a marginal cell) is never skipped:
    here the flash already holds the whole image, and only that page would be doubted."""
    image = as_image(demo_payload(NEW, size=4 * PAGE), tmp_path)
    hub = Watched(image.data)
    hub.hub.flaky_pages[2] = 0
    out = hub.flash(image)
    assert out.result is Result.PASSED, out.message
    assert 2 in hub.touched and out.pages_skipped == 0
    assert any("not when asked again: written, not skipped" in n for n in out.notes)


def test_a_flaky_page_among_changed_ones_is_written(tmp_path: Path) -> None:
    old = demo_payload(0x0101_0000, size=8 * PAGE)
    new = demo_release(old, NEW, changed=1, page_size=PAGE)  # the descriptor's page only
    hub = Watched(old)
    hub.hub.flaky_pages[5] = 0
    out = hub.flash(as_image(new, tmp_path))
    assert out.result is Result.PASSED, out.message
    assert {0, 5} <= hub.touched
    assert out.pages_written == 2


def test_without_get_checksum_every_page_is_written(tmp_path: Path) -> None:
    old = demo_payload(0x0101_0000, size=8 * PAGE)
    new = demo_release(old, NEW, changed=1, page_size=PAGE)
    hub = Watched(old, options="&no-checksum")
    out = hub.flash(as_image(new, tmp_path))
    assert out.result is Result.PASSED, out.message
    assert hub.touched == set(range(8))
    assert (out.pages_written, out.pages_skipped) == (8, 0)
    assert out.verify_method == "readback"
    assert any("no Get Checksum (0xA1)" in n for n in out.notes)


def test_a_blank_hub_is_written_without_erasing(tmp_path: Path) -> None:
    image = as_image(demo_payload(NEW, size=8 * PAGE), tmp_path)
    hub = Watched(b"")
    erased: list[int] = []
    erase = hub.hub.flash.erase_page
    hub.hub.flash.erase_page = lambda page: (erased.append(page), erase(page))[1]  # type: ignore[method-assign]
    out = hub.flash(image)
    check_honest(hub, image, out)
    assert erased == [] and out.pages_written == 8


# -- the plan itself, against a device that lies ---------------------------------------------


def test_crc_plan_writes_a_run_whose_second_answer_differs() -> None:
    data = bytes(range(256)) * 64  # 8 pages of 2 KiB
    answers: dict[tuple[int, int], int] = {}

    def two_faced(address: int, length: int) -> int:
        true = stm32_crc(data[address - BASE : address - BASE + length])
        seen = answers.setdefault((address, length), 0)
        answers[(address, length)] = seen + 1
        return true if seen == 0 else true ^ 1

    plan = crc_plan(two_faced, BASE, data, PAGE)
    assert plan.skipped == 0 and plan.erase == list(range(8)) and plan.notes


def test_readback_plan_writes_a_run_read_back_otherwise_the_second_time() -> None:
    data = bytes(range(256)) * 32  # 4 pages of 2 KiB, all already in flash
    reads: list[tuple[int, int]] = []

    def two_faced(address: int, length: int) -> bytes:
        reads.append((address, length))
        back = bytearray(data[address - BASE : address - BASE + length])
        if len(reads) > 1:
            back[-1] ^= 0x80  # a marginal bit on the second read
        return bytes(back)

    plan = readback_plan(two_faced, BASE, data, PAGE)
    assert reads == [(BASE, 4 * PAGE), (BASE, 4 * PAGE)]
    assert plan.skipped == 0 and plan.erase == [0, 1, 2, 3] and plan.notes


@given(
    size=st.integers(1, PAGE).map(lambda n: n * 4),
    same=st.sets(st.integers(0, 3)),
    erased=st.sets(st.integers(0, 3)),
    seed=st.integers(0, 2**32 - 1),
)
def test_plans_skip_exactly_the_pages_that_hold_the_image(
    size: int, same: set[int], erased: set[int], seed: int
) -> None:
    rng = random.Random(seed)
    data, flash = rng.randbytes(size), rng.randbytes(4 * PAGE)
    for n in erased:
        flash = flash[: n * PAGE] + b"\xff" * PAGE + flash[(n + 1) * PAGE :]
    expected = expected_pages(data, PAGE)
    mem = bytearray(flash)
    for n in same:
        mem[n * PAGE : (n + 1) * PAGE] = expected[n * PAGE : (n + 1) * PAGE].ljust(PAGE, b"\xff")

    def crc(address: int, length: int) -> int:
        return stm32_crc(mem[address - BASE : address - BASE + length])

    def read(address: int, length: int) -> bytes:
        return bytes(mem[address - BASE : address - BASE + length])

    pages = len(expected) // PAGE
    held = {
        n for n in range(pages) if mem[n * PAGE : (n + 1) * PAGE] == expected[n * PAGE :][:PAGE]
    }
    wrong = rng.randbytes(len(mem))  # a release the hub does not hold after all
    for plan in (
        crc_plan(crc, BASE, data, PAGE),
        readback_plan(read, BASE, data, PAGE),
        crc_plan(crc, BASE, data, PAGE, previous=bytes(mem)),
        crc_plan(crc, BASE, data, PAGE, previous=wrong),
    ):
        assert set(range(pages)) - set(plan.written) == held
        assert not set(plan.erase) & set(plan.blank)


@given(
    pages=st.integers(1, 8),
    changed=st.sets(st.integers(0, 7)),
    erased=st.sets(st.integers(0, 7)),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_hub_that_holds_the_release_it_reports_is_diffed_on_the_host(
    pages: int, changed: set[int], erased: set[int], seed: int
) -> None:
    # The whole range's CRC proves the flash holds the previous release: its pages are
    # compared on the host (no page asked one by one), and each run found to hold the
    # image is asked twice, as every match is; a hub that holds something else is asked
    # page by page, as before.
    rng = random.Random(seed)
    changed, erased = {n for n in changed if n < pages}, {n for n in erased if n < pages}
    assume(len(erased) < pages)  # a blank hub is written whole, without a diff (above)
    old = bytearray(rng.randbytes(pages * PAGE))
    for n in erased:
        old[n * PAGE : (n + 1) * PAGE] = b"\xff" * PAGE
    new = bytearray(old)
    for n in changed:
        new[n * PAGE : (n + 1) * PAGE] = rng.randbytes(PAGE)
    asked: list[tuple[int, int]] = []

    def crc(address: int, length: int) -> int:
        asked.append((address, length))
        return stm32_crc(old[address - BASE : address - BASE + length])

    plan = crc_plan(crc, BASE, bytes(new), PAGE, previous=bytes(old).rstrip(b"\xff"))
    differ = {n for n in range(pages) if new[n * PAGE : (n + 1) * PAGE] != old[n * PAGE :][:PAGE]}
    assert set(plan.written) == differ
    blank = {n for n in differ if old[n * PAGE : (n + 1) * PAGE] == b"\xff" * PAGE}
    assert set(plan.blank) == blank and set(plan.erase) == differ - blank
    runs = len(runs_of(sorted(set(range(pages)) - differ)))
    assert plan.asked == len(asked) == 1 + runs  # the whole range, then each run again


def test_station_flash_shows_and_reports_the_pages(tmp_path: Path) -> None:
    """``station flash`` says how many pages it wrote and left; ``--json`` carries both."""
    old = demo_payload(0x0101_0000, size=8 * PAGE)
    image = tmp_path / "release.hex"
    hexfile = bincopy.BinFile()
    hexfile.add_binary(demo_release(old, NEW, changed=2, page_size=PAGE), address=BASE)
    image.write_text(hexfile.as_ihex())
    port = f"sim://an3155?firmware=1.1.0.0&firmware-size={8 * PAGE}&unpaced"
    cmd = [
        sys.executable, "-m", "station.cli", "flash", "--port", port, "--profile", "demo-an3155",
        "--allow-unsigned", str(image),
    ]  # fmt: skip
    shown = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "2 pages written, 6 already held the image" in " ".join(shown.stdout.split())
    done = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["pages_written"], out["pages_skipped"], out["bytes_written"]) == (2, 6, 2 * PAGE)


@pytest.mark.parametrize(
    ("held", "diffed_on_the_host"),
    [(8 * PAGE, True), (5 * PAGE, False)],  # the catalogued release; another build of it
)
def test_a_hub_running_a_catalogued_release_is_planned_from_it(
    tmp_path: Path, held: int, diffed_on_the_host: bool
) -> None:
    # The chooser hands the session the release the hub reports; its CRC of the whole range
    # proves the flash holds it, so no page is asked alone. A hub that reports the version
    # but holds other bytes is planned from its own answers, page by page. Either way the
    # job passes.
    size = 8 * PAGE
    cat, trust = prepare_demo_catalog(tmp_path / "demo", size=size)
    policy = Policy(trust=trust)
    profile = load_profile("demo-an3155")
    hub = f"sim://an3155?slot=90&unpaced&firmware=0x{OLD:08X}&firmware-size={held}"
    notes: list[str] = []
    out = flash_hub(
        hub,
        profile,
        catalog_chooser(cat, profile, policy),
        policy=policy,
        on_progress=lambda _p, _d, _t, note: notes.append(note) if note else None,
    )
    assert out.result is Result.PASSED, out.message
    asked = int(next(n for n in notes if "device CRC" in n).split("(")[1].split()[0])
    assert (asked <= 2) is diffed_on_the_host, notes
    assert any("holds the release the hub reports" in n for n in out.notes) is diffed_on_the_host


def test_the_chooser_reads_the_reported_release_only_for_a_protocol_that_plans_from_it(
    tmp_path: Path,
) -> None:
    # A Gecko bootloader takes a whole GBL: its session plans nothing from the release the
    # hub runs, so the chooser does not read (or decompress) that release's file for it.
    cat, trust = prepare_demo_catalog(
        tmp_path / "demo", size=8 * PAGE, models=("demo-an3155", "demo-gecko")
    )
    policy = Policy(trust=trust)
    for name, hinted in (("demo-an3155", True), ("demo-gecko", False)):
        out = FlashOutcome(port="-", profile=name, phase="plan")
        out.version_before, out.hw_version = f"0x{OLD:08X}", DEMO_HW_MIN
        image = catalog_chooser(cat, load_profile(name), policy)(out)
        assert (image.previous is not None) is hinted, name
