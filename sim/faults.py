"""Moved to :mod:`sim.core.faults`, the one fault grammar of every simulated hub; kept so
that older imports still work."""

from sim.core.faults import GRAMMAR as GRAMMAR
from sim.core.faults import BlockFault as BlockFault
from sim.core.faults import BlockFaultKind as BlockFaultKind
from sim.core.faults import ByteFaults as ByteFaults
from sim.core.faults import FaultItem as FaultItem
from sim.core.faults import FaultPlan as FaultPlan
from sim.core.faults import RateFault as RateFault
from sim.core.faults import fault_plan as fault_plan
from sim.core.faults import parse_fault_spec as parse_fault_spec
from sim.core.faults import plan_for_slot as plan_for_slot
