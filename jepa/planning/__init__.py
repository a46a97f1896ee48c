"""jepa.planning: plan in a world model's latent space.

:class:`CEM` and :class:`MPPI` search action sequences whose predicted latents approach a goal's
latent (all candidates rolled out in one batched forward on the model's device); :func:`mpc` runs
one of them closed-loop in an environment; :func:`evaluate` measures success over fixed start/goal
pairs, for planners and baseline policies alike.
"""

from jepa.planning._base import COSTS, LatentPlanner
from jepa.planning.cem import CEM
from jepa.planning.mpc import MPCResult, evaluate, mpc, run_controller
from jepa.planning.mppi import MPPI

__all__ = ["CEM", "COSTS", "LatentPlanner", "MPCResult", "MPPI", "evaluate", "mpc", "run_controller"]
