"""The built-in protocol sessions: what one bootloader protocol does in each phase.

``station.flash`` runs the phases, the policy and the record for every hub; a session does
the protocol's part of each phase on one connected hub. Each module here is one built-in
protocol plug-in and ends with its ``PLUGIN`` (registered in ``pyproject.toml``); the
interface they follow, :class:`HubSession`, is in :mod:`station.protocols` with the
registry (docs/plugins.md). The names below are kept for older imports.
"""

from station.protocols import BootloaderFacts as BootloaderFacts
from station.protocols import HubSession as HubSession
from station.protocols import wrong_profile_hint as wrong_profile_hint
