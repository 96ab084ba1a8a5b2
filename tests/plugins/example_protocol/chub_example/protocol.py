"""The EXLINE wire facts, shared by the driver and the simulated hub."""

BLOCK = 32  # bytes per WR line (a WR line then fits the 128-character line buffer)
READY = b"EXLINE READY"  # what the bootloader prints when it starts
