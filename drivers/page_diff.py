"""Which pages of an image a hub's flash already holds: the plan of a write of only what changed.

Pure logic, no I/O: the caller passes how to ask the device (a device CRC of a range, or a
readback of it). Two rules keep a skip honest:

* a page is skipped only when the device's own answer for a range holding it equals the
  host's value for the bytes a full write would leave there (the image, then erased 0xFF to
  the end of its last page), so the flash after a skip is what a full write makes;
* every run of skipped pages is asked a second time, and a run whose second answer differs
  is written, not skipped: a hub that answers two ways (a marginal flash cell, a reply
  garbled into a valid one) cannot be trusted to hold the bytes.

The whole image is still verified after the write (as after a full one), so a wrong skip
could at worst fail a job, never pass it.

This is esptool's ``--diff-with`` and pyOCD's smart flash for the STM32 bootloader's Get
Checksum (0xA1) and DfuSe UPLOAD.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from drivers.crc import stm32_crc

#: A device CRC of ``length`` bytes at ``address`` (AN3155 Get Checksum).
CrcFn = Callable[[int, int], int]
#: ``length`` bytes read back from ``address`` (DfuSe UPLOAD).
ReadFn = Callable[[int, int], bytes]


@dataclass
class PagePlan:
    """The pages of an image to write, and the ones the flash already holds.

    Page numbers count from the image's first page (``base``). ``erase`` is what must be
    erased before it is written; ``blank`` holds pages the device says are erased already
    (written without an erase: a blank hub, or the tail beyond an older, shorter image).

    Attributes:
        base: address of the image's first page.
        page_size: bytes per page.
        pages: pages the image covers.
        erase: pages to erase and write.
        blank: pages to write without an erase.
        asked: questions put to the device (CRCs or readbacks).
        notes: what worth recording happened (a run that answered two ways).
    """

    base: int
    page_size: int
    pages: int
    erase: list[int] = field(default_factory=list)
    blank: list[int] = field(default_factory=list)
    asked: int = 0
    notes: list[str] = field(default_factory=list)

    @classmethod
    def full(cls, base: int, page_size: int, pages: int) -> PagePlan:
        """The plan of a full write: every page erased and written."""
        return cls(base, page_size, pages, erase=list(range(pages)))

    @property
    def written(self) -> list[int]:
        """Every page to write, in order."""
        return sorted({*self.erase, *self.blank})

    @property
    def skipped(self) -> int:
        """How many pages are left as they are."""
        return self.pages - len(self.written)

    def runs(self) -> list[tuple[int, int]]:
        """The pages to write as (first, count) runs of consecutive pages."""
        return runs_of(self.written)


def runs_of(pages: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive page numbers (sorted, distinct) as (first, count) runs."""
    out: list[tuple[int, int]] = []
    for page in pages:
        if out and out[-1][0] + out[-1][1] == page:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((page, 1))
    return out


def expected_pages(data: bytes, page_size: int) -> bytes:
    """What a full write leaves in the image's pages: the image, then 0xFF to a page end."""
    return data + b"\xff" * (-len(data) % page_size)


#: Sub-ranges a range that differs is split into.
FANOUT = 8
#: When this many of a range's sub-ranges differ, the changes are dense there: each page of
#: them is asked at once rather than split further (which would ask more than one per page).
DENSE = 6


@functools.lru_cache(maxsize=64)
def _erased_crc(length: int) -> int:
    return stm32_crc(b"\xff" * length)


def _split(first: int, count: int) -> list[tuple[int, int]]:
    step = -(-count // FANOUT)
    return [(sub, min(step, first + count - sub)) for sub in range(first, first + count, step)]


def crc_plan(
    crc_of: CrcFn, base: int, data: bytes, page_size: int, previous: bytes | None = None
) -> PagePlan:
    """Plan a write of ``data`` at ``base`` (a page boundary) from device CRCs.

    The whole range is asked first (one answer when nothing changed); a range that differs
    is split in :data:`FANOUT` and each part asked, down to single pages, except where most
    parts differ (:data:`DENSE`): there every page is asked. A release that changed a few
    clusters of pages costs a few dozen answers, one that changed everything about one per
    page. A range whose CRC is that of erased flash is written without an erase.

    ``previous``: what the flash is thought to hold from ``base`` (the release the hub
    says it runs), as esptool's ``--diff-with``. When the whole range's CRC is that of
    ``previous`` (erased beyond its end), the pages that differ are known on the host and
    none is asked one by one. It is never trusted further than that answer: the pages it
    says already hold the image are asked again, run by run, as every match is.
    """
    expected = expected_pages(data, page_size)
    pages = len(expected) // page_size
    plan = PagePlan(base, page_size, pages)
    same: list[int] = []

    def ask(first: int, count: int) -> str:
        return answer_of(first, count, crc_of(base + first * page_size, count * page_size))

    def answer_of(first: int, count: int, device: int) -> str:
        start, end = first * page_size, (first + count) * page_size
        plan.asked += 1
        if device == stm32_crc(expected[start:end]):
            return "same"
        return "blank" if device == _erased_crc(end - start) else "differs"

    def settle(first: int, count: int, answer: str) -> None:
        if answer == "same":
            same.extend(range(first, first + count))
        elif answer == "blank":
            plan.blank.extend(range(first, first + count))
        elif count == 1:
            plan.erase.append(first)
        else:
            parts = answers(_split(first, count))
            dense = sum(a == "differs" for _, a in parts) >= DENSE
            for (sub, n), a in parts:
                if dense and a == "differs" and n > 1:
                    for (page, _), a1 in answers([(p, 1) for p in range(sub, sub + n)]):
                        settle(page, 1, a1)
                else:
                    settle(sub, n, a)

    def answers(parts: list[tuple[int, int]]) -> list[tuple[tuple[int, int], str]]:
        """The answers for the parts of a range known to differ; when all but the last
        matched, the last differs and is not asked (a wrong inference only writes it)."""
        out = [(part, ask(*part)) for part in parts[:-1]]
        last = "differs" if all(a == "same" for _, a in out) else ask(*parts[-1])
        return [*out, (parts[-1], last)]

    if pages:
        whole = crc_of(base, len(expected))
        answer = answer_of(0, pages, whole)
        held = _padded(previous, len(expected)) if previous is not None else None
        if answer == "differs" and held is not None and whole == stm32_crc(held):
            _compare(plan, same, held, expected)
            plan.notes.append(
                "the flash holds the release the hub reports (its CRC of the whole range): "
                "pages compared on the station"
            )
        else:
            settle(0, pages, answer)
    _confirm(plan, sorted(same), lambda first, count: ask(first, count) == "same")
    return plan


def _padded(previous: bytes, length: int) -> bytes:
    """``previous`` cut or erased-padded to ``length`` bytes (flash past an image is erased
    when the hub was written whole; the device's CRC of the range says whether it is)."""
    return previous[:length].ljust(length, b"\xff")


def _compare(plan: PagePlan, same: list[int], held: bytes, expected: bytes) -> None:
    """Sort the pages on the host, from flash known (read back, or proved by its CRC) to
    hold ``held``: matching ones into ``same`` (to be asked again), erased ones to write
    without an erase, the rest to erase and write."""
    size = plan.page_size
    erased = b"\xff" * size
    for page in range(plan.pages):
        now = held[page * size : (page + 1) * size]
        if now == expected[page * size : (page + 1) * size]:
            same.append(page)
        elif now == erased:
            plan.blank.append(page)
        else:
            plan.erase.append(page)


def readback_plan(read: ReadFn, base: int, data: bytes, page_size: int) -> PagePlan:
    """Plan a write of ``data`` at ``base`` (a page boundary) from the flash read back: one
    read of the whole range compared page by page on the host, then a second read of each
    run that matched."""
    expected = expected_pages(data, page_size)
    pages = len(expected) // page_size
    plan = PagePlan(base, page_size, pages)
    if not pages:
        return plan
    plan.asked += 1
    same: list[int] = []
    _compare(plan, same, read(base, len(expected)), expected)

    def again(first: int, count: int) -> bool:
        plan.asked += 1
        start, end = first * page_size, (first + count) * page_size
        return read(base + start, end - start) == expected[start:end]

    _confirm(plan, same, again)
    return plan


def _confirm(plan: PagePlan, same: list[int], holds: Callable[[int, int], bool]) -> None:
    """Ask each run of matching pages again; a run that answers otherwise is written."""
    for first, count in runs_of(same):
        if holds(first, count):
            continue
        plan.erase.extend(range(first, first + count))
        lo = plan.base + first * plan.page_size
        hi = lo + count * plan.page_size
        plan.notes.append(
            f"pages 0x{lo:08X}..0x{hi:08X} matched the image once and not when asked again: "
            "written, not skipped"
        )
    plan.erase.sort()
    plan.blank.sort()
