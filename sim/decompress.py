"""Streaming decompressors for the simulated Gecko bootloader's compressed program data.

The bootloader decompresses a PROGRAM_DATA_LZ4 / _LZMA tag as its XMODEM blocks arrive and
programs what comes out before it ACKs the block (Gecko SDK ``btl_decompress_lz4.c``,
``btl_decompress_lzma.c``), so the model must too: decompressing a whole tag at its end
would put all of its flash time on one block's ACK. LZ4 here is a small state machine
over raw LZ4 block sequences written for this model (the ``lz4`` package has no streaming
block decoder); LZMA is the standard library's decoder fed with the ``.lzma`` header whose
size field is replaced by "unknown", as the bootloader ignores it and needs the end marker.
Both stop at ``limit`` output bytes (the application area left), so a bomb costs nothing.
"""

from __future__ import annotations

import lzma

from firmware_images.gbl import LZMA_HEADER_SIZE, LZMA_MEMLIMIT

_WINDOW = 65535  # LZ4 offsets are 16 bits
_TOKEN, _LIT_LEN, _LITERALS, _OFF_LO, _OFF_HI, _MATCH_LEN = range(6)


class DecompressError(Exception):
    """The compressed data is corrupt, incomplete, or decompresses past ``limit``."""


class Lz4Stream:
    """Raw LZ4 block sequences in, bytes out, any split of the input."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.produced = 0
        self._state = _TOKEN
        self._literals = 0
        self._match = 0
        self._offset = 0
        self._window = bytearray()

    def _emit(self, out: bytearray, data: bytes | bytearray) -> None:
        self.produced += len(data)
        if self.produced > self.limit:
            raise DecompressError(f"LZ4 data decompresses to more than {self.limit} bytes")
        out += data
        self._window += data
        if len(self._window) > 2 * _WINDOW:
            del self._window[:-_WINDOW]

    def feed(self, data: bytes) -> bytes:
        """Decompress the next input bytes; returns the output they complete."""
        out = bytearray()
        i, n = 0, len(data)
        while i < n:
            state = self._state
            if state == _LITERALS:
                take = min(self._literals, n - i)
                self._emit(out, data[i : i + take])
                i += take
                self._literals -= take
                if self._literals == 0:
                    self._state = _OFF_LO
                continue
            byte = data[i]
            i += 1
            if state == _TOKEN:
                self._literals, self._match = byte >> 4, 4 + (byte & 0x0F)
                if self._literals == 15:
                    self._state = _LIT_LEN
                else:
                    self._state = _LITERALS if self._literals else _OFF_LO
            elif state == _LIT_LEN:
                self._literals += byte
                if byte != 255:
                    self._state = _LITERALS
            elif state == _OFF_LO:
                self._offset = byte
                self._state = _OFF_HI
            elif state == _OFF_HI:
                self._offset |= byte << 8
                if self._match == 19:
                    self._state = _MATCH_LEN
                else:
                    self._copy(out)
            else:  # _MATCH_LEN
                self._match += byte
                if byte != 255:
                    self._copy(out)
        return bytes(out)

    def _copy(self, out: bytearray) -> None:
        offset, left = self._offset, self._match
        if offset == 0 or offset > len(self._window):
            raise DecompressError(f"LZ4 match offset {offset} reaches before the data")
        if self.produced + left > self.limit:
            raise DecompressError(f"LZ4 data decompresses to more than {self.limit} bytes")
        while left:  # an offset shorter than the match repeats the bytes just written
            start = len(self._window) - offset
            piece = self._window[start : start + min(left, offset)]
            self._emit(out, piece)
            left -= len(piece)
        self._state = _TOKEN

    def finish(self) -> None:
        """The tag ended: the last sequence must have been literals only."""
        if self._state != _OFF_LO:
            raise DecompressError("LZ4 data ends inside a sequence")


class LzmaStream:
    """An ``.lzma`` stream in, bytes out; the header's size field is not trusted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.produced = 0
        self._header = bytearray()
        self._decoder = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE, memlimit=LZMA_MEMLIMIT)

    def feed(self, data: bytes) -> bytes:
        """Decompress the next input bytes; returns the output they complete."""
        if len(self._header) < LZMA_HEADER_SIZE:
            need = LZMA_HEADER_SIZE - len(self._header)
            self._header += data[:need]
            data = data[need:]
            if len(self._header) < LZMA_HEADER_SIZE:
                return b""
            data = bytes(self._header[:5]) + b"\xff" * 8 + data
        if self._decoder.eof:
            if data:
                raise DecompressError("bytes follow the LZMA end-of-stream marker")
            return b""
        try:
            out = self._decoder.decompress(data, max_length=self.limit - self.produced + 1)
        except lzma.LZMAError as exc:
            raise DecompressError(f"LZMA data is corrupt ({exc})") from None
        self.produced += len(out)
        if self.produced > self.limit or not (self._decoder.needs_input or self._decoder.eof):
            raise DecompressError(f"LZMA data decompresses to more than {self.limit} bytes")
        if self._decoder.eof and self._decoder.unused_data:
            raise DecompressError("bytes follow the LZMA end-of-stream marker")
        return out

    def finish(self) -> None:
        """The tag ended: the stream must have reached its end marker."""
        if not self._decoder.eof:
            raise DecompressError("LZMA data ends without its end-of-stream marker")


Decompressor = Lz4Stream | LzmaStream
