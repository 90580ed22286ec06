"""The embedded IMS simulator: a fake cloud for the demo, the end-to-end tests and rehearsals.

``world`` holds the ground truth (no I/O, time passed in), ``faults`` decides injected
failures, ``app`` serves the world over HTTP like IMS and IAM do, ``inmemory`` offers the same
world as a ``TenantCloud`` without HTTP, and ``scenario`` loads, dumps and generates worlds.
"""

from orchestrator.simulator.faults import Fault, FaultPlan, FaultRates
from orchestrator.simulator.world import SimError, World, WorldParams

__all__ = ["Fault", "FaultPlan", "FaultRates", "SimError", "World", "WorldParams"]
