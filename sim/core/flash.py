"""NOR flash as every simulated hub has it: erased to 0xFF, words programmed only while
erased, page erase. Sizes are the model's; nothing here names a part."""

from __future__ import annotations


class Flash:
    """NOR flash: erased to 0xFF, 32-bit words programmable only while erased, page erase."""

    def __init__(self, base: int, size: int, page_size: int) -> None:
        if page_size <= 0 or page_size % 4 or size <= 0 or size % page_size:
            raise ValueError("flash size must be a positive multiple of a word-aligned page")
        self.base = base
        self.size = size
        self.page_size = page_size
        self.data = bytearray(b"\xff") * size

    @property
    def pages(self) -> int:
        """Number of pages."""
        return self.size // self.page_size

    @property
    def end(self) -> int:
        """First address after the flash."""
        return self.base + self.size

    def holds(self, address: int, length: int) -> bool:
        """Whether ``[address, address+length)`` lies inside the flash."""
        return self.base <= address and address + length <= self.end and length >= 0

    def read(self, address: int, length: int) -> bytes:
        """Bytes at ``address`` (caller checks :meth:`holds`)."""
        offset = address - self.base
        return bytes(self.data[offset : offset + length])

    def can_program(self, address: int, length: int) -> bool:
        """Whether a program of ``length`` bytes at ``address`` would be accepted."""
        if address % 4 or length % 4 or not self.holds(address, length):
            return False
        offset = address - self.base
        return self.data[offset : offset + length].count(0xFF) == length

    def program(self, address: int, data: bytes) -> bool:
        """Program whole erased words; all or nothing. Returns whether it was accepted."""
        if not self.can_program(address, len(data)):
            return False
        offset = address - self.base
        self.data[offset : offset + len(data)] = data
        return True

    def pages_of(self, address: int, length: int) -> range:
        """Page numbers touched by ``[address, address+length)``."""
        first = (address - self.base) // self.page_size
        last = (address - self.base + max(length, 1) - 1) // self.page_size
        return range(first, last + 1)

    def erase_page(self, page: int) -> None:
        """Erase one page to 0xFF."""
        if not 0 <= page < self.pages:
            raise ValueError(f"page {page} out of range 0..{self.pages - 1}")
        start = page * self.page_size
        self.data[start : start + self.page_size] = b"\xff" * self.page_size

    def mass_erase(self) -> None:
        """Erase every page."""
        self.data[:] = b"\xff" * self.size
