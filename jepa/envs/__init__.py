"""jepa.envs: small embedded environments for world models and planning.

:class:`TwoRooms` (a point agent, two rooms, a door), the fixed evaluation pairs
:data:`EVAL_PAIRS`, baseline controllers (:class:`RandomPolicy`, :class:`StraightLinePolicy`) and
:func:`collect`, which writes trajectories in the layout :class:`jepa.data.TrajectoryDataset` reads;
:func:`make_env` builds one by name.
"""

from jepa.envs.collect import collect
from jepa.envs.policies import RandomPolicy, StraightLinePolicy, action_bounds
from jepa.envs.registry import ENVS, make_env
from jepa.envs.two_rooms import EVAL_PAIRS, EvalPair, TwoRooms

__all__ = ["ENVS", "EVAL_PAIRS", "EvalPair", "RandomPolicy", "StraightLinePolicy", "TwoRooms", "action_bounds", "collect", "make_env"]
