"""Property tests of the flash model against a plain bytearray reference."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.an3155 import FLASH_BASE, FLASH_SIZE, PAGE_SIZE, Flash

SIZE, PAGE = 8 * 256, 256  # a small flash keeps overlaps frequent and examples fast

programs = st.tuples(
    st.just("program"),
    st.integers(-8, SIZE + 8),
    st.binary(min_size=0, max_size=96),
)
erases = st.tuples(st.just("erase"), st.integers(0, SIZE // PAGE - 1), st.just(b""))
masses = st.tuples(st.just("mass"), st.just(0), st.just(b""))


def reference_program(ref: bytearray, address: int, data: bytes) -> bool:
    """The rule, restated: aligned whole words inside the flash, every target byte erased."""
    end = address + len(data)
    if address % 4 or len(data) % 4 or address < 0 or end > len(ref):
        return False
    if any(b != 0xFF for b in ref[address:end]):
        return False
    ref[address:end] = data
    return True


def test_contract_geometry() -> None:
    flash = Flash()
    assert (flash.base, flash.size, flash.page_size, flash.pages) == (
        FLASH_BASE,
        FLASH_SIZE,
        PAGE_SIZE,
        256,
    )
    assert flash.data == b"\xff" * FLASH_SIZE


@pytest.mark.parametrize(("size", "page"), [(1000, 256), (1024, 6), (0, 256)])
def test_bad_geometry_is_refused(size: int, page: int) -> None:
    with pytest.raises(ValueError):
        Flash(size=size, page_size=page)


@given(st.integers(0, SIZE // 4 - 1), st.binary(min_size=4, max_size=4))
def test_a_programmed_word_cannot_be_programmed_again(word: int, value: bytes) -> None:
    flash = Flash(base=0, size=SIZE, page_size=PAGE)
    assert flash.program(word * 4, value)
    before = bytes(flash.data)
    assert not flash.program(word * 4, b"\xff" * 4)
    assert not flash.program(word * 4, value)
    assert flash.data == before


@given(st.lists(st.tuples(st.integers(0, SIZE // 4 - 1), st.binary(min_size=4, max_size=4))))
def test_erase_restores_ff_on_its_page_only(writes: list[tuple[int, bytes]]) -> None:
    flash = Flash(base=0, size=SIZE, page_size=PAGE)
    for word, value in writes:
        flash.program(word * 4, value)
    before = bytes(flash.data)
    flash.erase_page(2)
    assert flash.data[2 * PAGE : 3 * PAGE] == b"\xff" * PAGE
    assert flash.data[: 2 * PAGE] == before[: 2 * PAGE]
    assert flash.data[3 * PAGE :] == before[3 * PAGE :]
    flash.mass_erase()
    assert flash.data == b"\xff" * SIZE


@given(st.lists(st.one_of(programs, erases, masses), max_size=40))
def test_random_operations_agree_with_the_reference(ops: list[tuple[str, int, bytes]]) -> None:
    flash = Flash(base=0x100, size=SIZE, page_size=PAGE)
    ref = bytearray(b"\xff" * SIZE)
    for kind, where, data in ops:
        if kind == "program":
            accepted = flash.program(0x100 + where, data)
            assert accepted == reference_program(ref, where, data)
        elif kind == "erase":
            flash.erase_page(where)
            ref[where * PAGE : (where + 1) * PAGE] = b"\xff" * PAGE
        else:
            flash.mass_erase()
            ref[:] = b"\xff" * SIZE
        assert flash.data == ref
    assert flash.read(0x100, SIZE) == bytes(ref)


def test_erase_page_out_of_range() -> None:
    with pytest.raises(ValueError):
        Flash(base=0, size=SIZE, page_size=PAGE).erase_page(SIZE // PAGE)


def test_pages_of_a_range() -> None:
    flash = Flash()
    assert flash.pages_of(FLASH_BASE + 2040, 16) == range(0, 2)
    assert flash.pages_of(FLASH_BASE + 4096, 4) == range(2, 3)
