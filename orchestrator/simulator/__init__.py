"""The embedded IMS simulator: a fake cloud for the demo, the end-to-end tests and rehearsals.

``world`` holds the ground truth (no I/O, time passed in), with its parts in ``params``,
``accounts``, ``images``, ``jobs`` and ``truth`` (what happened, as a value); ``faults`` decides
injected failures, ``app`` serves the world over HTTP like IMS and IAM do, ``inmemory`` offers
the same world as a ``TenantCloud`` without HTTP, and ``scenario`` loads, dumps and generates
worlds.
"""

from orchestrator.simulator.faults import Fault, FaultPlan, FaultRates
from orchestrator.simulator.images import SimError
from orchestrator.simulator.params import WorldParams
from orchestrator.simulator.truth import Truth
from orchestrator.simulator.world import World

__all__ = ["Fault", "FaultPlan", "FaultRates", "SimError", "Truth", "World", "WorldParams"]
