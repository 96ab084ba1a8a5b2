"""The EXLINE plug-in object: the one thing ``pyproject.toml`` registers."""

from chub_example import sim
from chub_example.driver import ExlineDriver
from chub_example.image import FORMAT
from chub_example.session import ExlineSession
from station.protocols import Link, ProtocolPlugin

PLUGIN = ProtocolPlugin(
    name="exline",
    description="EXLINE example line bootloader (tests/plugins/example_protocol)",
    link=Link.SERIAL,
    session=ExlineSession,
    driver=ExlineDriver,
    image_formats=frozenset({"exline"}),  # its bootloader takes its own images only
    containers=(FORMAT,),
    verify_methods=("crc",),
    sim_model=sim.MODEL,
)
