"""EXLINE: an example bootloader protocol, packaged as a station plug-in.

A line protocol small enough to read in one sitting: the host sends ASCII lines, the
bootloader answers each with one line. ``ID`` -> ``ID <EUI-64> <hw>``; ``ER <addr> <n>``
erases n pages; ``WR <addr> <hex>`` programs up to 32 bytes; ``CRC <addr> <len>`` ->
``CRC <crc32>``; ``GO`` starts the application (which then speaks the demo console).
Errors are ``ERR <why>``.
"""
