"""TwoRooms: a point agent in the unit square, split by a wall with a door.

Geometry (defaults): the wall is the vertical band ``x in [0.48, 0.52]`` from the bottom to the top
of the square, with a door where ``y in [0.4, 0.6]``. The agent is a point; an action ``a`` in
``[-1, 1]^2`` moves it by ``max_step * a``. Motion is swept, not teleported: the straight path of a
step is tested against the wall blocks; the agent stops at the first face it meets and slides along it
(the velocity component into the wall is blocked) until the step ends or the slide passes the end of
the face (a door jamb), so no step, however large, passes through the wall. The border of the square
stops the agent the same way.

Observations are the position ``(x, y)`` (``observation="state"``, shape ``(2,)``) or a small
grey image of the scene (``observation="image"``, shape ``(1, S, S)``: walls at 0.5, the agent as a
bright blob). The episode terminates when the agent is within ``goal_radius`` of the goal.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

OBSERVATIONS = ("state", "image")


class EvalPair(NamedTuple):
    """A fixed start/goal pair of the evaluation set; ``kind`` is ``"same_room"`` or ``"cross_wall"``."""

    start: tuple[float, float]
    goal: tuple[float, float]
    kind: str


def _pairs() -> tuple[EvalPair, ...]:
    same = [
        ((0.10, 0.10), (0.35, 0.85)),  # left room: corner to far corner
        ((0.30, 0.70), (0.12, 0.20)),
        ((0.20, 0.50), (0.42, 0.15)),
        ((0.40, 0.90), (0.08, 0.60)),
        ((0.25, 0.30), (0.40, 0.55)),  # left room, short hop near the door
        ((0.90, 0.90), (0.62, 0.12)),  # right room
        ((0.60, 0.40), (0.88, 0.75)),
        ((0.75, 0.10), (0.60, 0.85)),
        ((0.85, 0.50), (0.58, 0.30)),
        ((0.65, 0.75), (0.92, 0.20)),
    ]
    cross = [
        ((0.30, 0.50), (0.70, 0.50)),  # straight through the door
        ((0.25, 0.20), (0.75, 0.80)),  # the straight line passes the door
        ((0.20, 0.20), (0.80, 0.20)),  # from here on the straight line hits the wall
        ((0.20, 0.85), (0.75, 0.80)),
        ((0.10, 0.10), (0.85, 0.30)),
        ((0.80, 0.15), (0.25, 0.25)),  # right to left
        ((0.75, 0.90), (0.20, 0.75)),
        ((0.90, 0.65), (0.15, 0.30)),  # the straight line passes the door
        ((0.70, 0.30), (0.10, 0.90)),  # the straight line passes the door
        ((0.85, 0.10), (0.30, 0.95)),
    ]
    return tuple(EvalPair(s, g, "same_room") for s, g in same) + tuple(EvalPair(s, g, "cross_wall") for s, g in cross)


#: The fixed evaluation set: 10 same-room pairs (5 per room) and 10 cross-wall pairs (5 each way; for
#: 6 of them the wall blocks the straight line to the goal, so going straight fails and the way
#: leads through the door). Coordinates are for the default geometry (wall band x in [0.48, 0.52],
#: door y in [0.4, 0.6]). Cross-wall pairs start and end at least 0.18 from the wall: with both ends
#: pressed against the wall far from the door, a latent-distance cost has a local minimum at the
#: wall that short horizons do not escape, even with the true dynamics.
EVAL_PAIRS: tuple[EvalPair, ...] = _pairs()


def _check_float(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"TwoRooms: {name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    ok = (low < v if low_open else low <= v) and v <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"TwoRooms: {name} must be in {bracket}{low}, {high}], got {value!r}")
    return v


class TwoRooms:
    """Point-agent navigation between two rooms joined by a door.

    Args:
        max_step: distance moved per unit of action along each axis (actions lie in ``[-1, 1]^2``).
        wall_x: x of the centre line of the wall.
        wall_thickness: width of the wall band.
        door_center: y of the middle of the door.
        door_width: height of the door opening (0 closes it).
        goal_radius: the goal counts as reached within this Euclidean distance.
        observation: ``"state"`` (the position, ``(2,)``) or ``"image"`` (``(1, image_size, image_size)``).
        image_size: side of rendered images in pixels.

    The API follows Gymnasium: :meth:`reset` returns ``(obs, info)``, :meth:`step` returns
    ``(obs, reward, terminated, truncated, info)`` with ``reward = -distance to the goal`` and
    ``info["is_success"]`` and ``info["state"]`` (the true position, whatever the observation; what
    :func:`jepa.envs.collect` records as ``states``). :meth:`observe` returns the current observation and
    :meth:`observe_at` the observation the agent would see at any position (goal images).
    """

    action_dim = 2

    def __init__(
        self,
        *,
        max_step: float = 0.1,
        wall_x: float = 0.5,
        wall_thickness: float = 0.04,
        door_center: float = 0.5,
        door_width: float = 0.2,
        goal_radius: float = 0.05,
        observation: str = "state",
        image_size: int = 32,
    ) -> None:
        self.max_step = _check_float("max_step", max_step, 0.0, 1.0, low_open=True)
        self.wall_thickness = _check_float("wall_thickness", wall_thickness, 0.0, 0.5, low_open=True)
        half = self.wall_thickness / 2
        self.wall_x = _check_float("wall_x", wall_x, half, 1.0 - half, low_open=True)
        self.door_width = _check_float("door_width", door_width, 0.0, 1.0)
        self.door_center = _check_float("door_center", door_center, 0.0, 1.0)
        if self.door_width > 0 and not (0.0 < door_center - door_width / 2 and door_center + door_width / 2 < 1.0):
            raise ValueError(
                f"TwoRooms: the door (door_center={door_center!r}, door_width={door_width!r}) must lie strictly inside (0, 1)"
            )
        self.goal_radius = _check_float("goal_radius", goal_radius, 0.0, 1.0, low_open=True)
        if observation not in OBSERVATIONS:
            raise ValueError(f"TwoRooms: observation must be one of {OBSERVATIONS}, got {observation!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or not 8 <= image_size <= 256:
            raise ValueError(f"TwoRooms: image_size must be an int in [8, 256], got {image_size!r}")
        self.observation = observation
        self.image_size = image_size
        self.action_low = -np.ones(2, dtype=np.float32)
        self.action_high = np.ones(2, dtype=np.float32)
        lo_x, hi_x = self.wall_x - half, self.wall_x + half
        if self.door_width > 0:
            d_lo, d_hi = self.door_center - self.door_width / 2, self.door_center + self.door_width / 2
            # The blocks reach past the square (y < 0, y > 1) so a step whose straight path leaves the
            # square is stopped where the clipped (physical) path would meet the wall.
            self.walls = np.array([[lo_x, -1.0, hi_x, d_lo], [lo_x, d_hi, hi_x, 2.0]], dtype=np.float64)
        else:
            self.walls = np.array([[lo_x, -1.0, hi_x, 2.0]], dtype=np.float64)
        self._background = self._render_walls(image_size)
        self._position = np.array([0.25, 0.5])
        self._goal = np.array([0.75, 0.5])
        self._rng = np.random.default_rng()

    # ------------------------------------------------------------------ geometry
    @property
    def observation_shape(self) -> tuple[int, ...]:
        """Shape of one observation."""
        return (2,) if self.observation == "state" else (1, self.image_size, self.image_size)

    @property
    def position(self) -> np.ndarray:
        """Agent position ``(x, y)`` (a copy)."""
        return self._position.copy()

    @property
    def goal(self) -> np.ndarray:
        """Goal position ``(x, y)`` (a copy)."""
        return self._goal.copy()

    def is_free(self, position: Any) -> bool:
        """True when ``position`` is inside the square and not inside the wall (faces count as free)."""
        p = np.asarray(position, dtype=np.float64)
        if not (0.0 <= p[0] <= 1.0 and 0.0 <= p[1] <= 1.0):
            return False
        return not any(b[0] < p[0] < b[2] and b[1] < p[1] < b[3] for b in self.walls)

    def room(self, position: Any) -> int:
        """0 for the left room (x < wall_x), 1 for the right one."""
        return int(float(np.asarray(position)[0]) >= self.wall_x)

    def sample_free(self, rng: np.random.Generator | None = None, margin: float = 0.0) -> np.ndarray:
        """A uniformly random free position at least ``margin`` away from the walls and border."""
        rng = self._rng if rng is None else rng
        for _ in range(10_000):
            p = rng.uniform(margin, 1.0 - margin, size=2)
            grown = self.walls + np.array([-margin, -margin, margin, margin])
            if not any(b[0] < p[0] < b[2] and b[1] < p[1] < b[3] for b in grown):
                return p
        raise RuntimeError(f"TwoRooms.sample_free: no free position with margin={margin!r}")

    def move(self, position: Any, displacement: Any) -> np.ndarray:
        """Where a step of ``displacement`` from ``position`` ends.

        The step is a straight motion at constant commanded velocity over unit time. When the path
        meets a wall face, the agent stops there and slides along the face (the velocity component
        into the wall is blocked); when the slide passes the end of the face (a door jamb), the
        blocked component acts again; pressed into an inside corner, or against a face with no
        motion along it, the agent stays. The border of the square blocks the same way.
        """
        p = np.array(position, dtype=np.float64)
        v = np.array(displacement, dtype=np.float64)
        tau = 1.0  # time left in the step
        contact: tuple[int, int] | None = None  # (block, axis of its face) the agent is pressed against
        # Events (hit a face, slide off its end) alternate along each axis in one direction only, so a
        # step has a handful of them; the bound is generous.
        for _ in range(10):
            eff = v.copy()
            s_release = np.inf
            if contact is not None:
                k, ax = contact
                o = 1 - ax
                eff[ax] = 0.0
                if eff[o] == 0.0:
                    break  # pressed against the face with no motion along it
                edge = self.walls[k][2 + o] if eff[o] > 0 else self.walls[k][o]
                s_release = (edge - p[o]) / eff[o]
            hit = self._first_hit(p, eff, tau)
            if hit is not None and hit[0] <= min(s_release, tau):
                s, k_hit, axis, face = hit
                p = p + s * eff
                p[axis] = face  # exactly on the face: rounding must not leave the point inside the block
                tau -= s
                if contact is not None:
                    break  # a second face across the first: an inside corner
                contact = (k_hit, axis)
            elif s_release < tau:
                p = p + s_release * eff
                p[1 - contact[1]] = edge
                tau -= s_release
                contact = None
            else:
                p = p + tau * eff
                break
        return np.clip(p, 0.0, 1.0)

    def _first_hit(self, p: np.ndarray, v: np.ndarray, tau: float) -> tuple[float, int, int, float] | None:
        """Earliest entry ``(time in [0, tau], block, axis of the face, face coordinate)`` of the path
        ``p + s v`` into the interior of a wall block (slab method), or None."""
        best = None
        for k, block in enumerate(self.walls):
            lo, hi = block[:2], block[2:]
            s_enter, s_exit, axis = -np.inf, np.inf, -1
            for i in range(2):
                if v[i] == 0.0:
                    if not lo[i] < p[i] < hi[i]:
                        break  # moving parallel to this slab, outside it: never inside the block
                    continue
                s0, s1 = (lo[i] - p[i]) / v[i], (hi[i] - p[i]) / v[i]
                if s0 > s1:
                    s0, s1 = s1, s0
                if s0 > s_enter:
                    s_enter, axis = s0, i
                s_exit = min(s_exit, s1)
            else:
                if axis >= 0 and s_enter < s_exit and 0.0 <= s_enter <= tau and s_exit > 0.0:
                    if best is None or s_enter < best[0]:
                        face = lo[axis] if v[axis] > 0 else hi[axis]
                        best = (float(s_enter), k, axis, float(face))
        return best

    # ------------------------------------------------------------------ episode
    def reset(
        self, seed: int | None = None, *, start: Any = None, goal: Any = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; returns ``(observation, info)``.

        ``seed`` reseeds the generator that draws a random free ``start`` and ``goal`` when they
        are not given (a random goal is at least ``2 * goal_radius`` from the start).
        """
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                raise TypeError(f"TwoRooms.reset: seed must be an int or None, got {type(seed).__name__} {seed!r}")
            self._rng = np.random.default_rng(int(seed))
        self._position = self._checked_point("start", start) if start is not None else self.sample_free(margin=0.02)
        if goal is not None:
            self._goal = self._checked_point("goal", goal)
        else:
            for _ in range(1000):
                self._goal = self.sample_free(margin=0.02)
                if np.linalg.norm(self._goal - self._position) > 2 * self.goal_radius:
                    break
        return self.observe(), self._info(collided=False)

    def _checked_point(self, name: str, value: Any) -> np.ndarray:
        p = np.asarray(value, dtype=np.float64)
        if p.shape != (2,) or not np.isfinite(p).all():
            raise ValueError(f"TwoRooms.reset: {name} must be a finite (x, y) pair, got {value!r}")
        if not self.is_free(p):
            raise ValueError(f"TwoRooms.reset: {name}={tuple(p.tolist())} is outside the square or inside the wall")
        return p

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply ``action`` (clipped to ``[-1, 1]^2``); returns ``(obs, reward, terminated, truncated, info)``."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2,):
            raise ValueError(f"TwoRooms.step: action must have shape (2,), got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"TwoRooms.step: action must be finite, got {a.tolist()}")
        d = self.max_step * np.clip(a, -1.0, 1.0)
        target = self._position + d
        self._position = self.move(self._position, d)
        collided = bool(np.abs(self._position - target).max() > 1e-12)  # stopped by the wall or the border
        info = self._info(collided=collided)
        return self.observe(), -info["distance"], info["is_success"], False, info

    def _info(self, *, collided: bool) -> dict[str, Any]:
        distance = float(np.linalg.norm(self._position - self._goal))
        return {
            "state": self._position.astype(np.float32),
            "position": self.position,
            "goal": self.goal,
            "distance": distance,
            "is_success": distance <= self.goal_radius,
            "collided": collided,
        }

    # ------------------------------------------------------------------ observations
    def observe(self) -> np.ndarray:
        """The current observation (float32)."""
        return self.observe_at(self._position)

    def observe_at(self, position: Any) -> np.ndarray:
        """The observation of an agent standing at ``position`` (e.g. the goal's observation)."""
        p = np.asarray(position, dtype=np.float64)
        if p.shape != (2,):
            raise ValueError(f"TwoRooms.observe_at: position must have shape (2,), got {p.shape}")
        if self.observation == "state":
            return p.astype(np.float32)
        return self.render_at(p)[None]

    def goal_observation(self) -> np.ndarray:
        """The observation at the goal (what a planner is asked to reach)."""
        return self.observe_at(self._goal)

    def render(self) -> np.ndarray:
        """``(image_size, image_size)`` float32 image of the scene (walls 0.5, agent blob up to 1)."""
        return self.render_at(self._position)

    def render_at(self, position: np.ndarray) -> np.ndarray:
        """The scene image with the agent at ``position``; row 0 is y = 1 (top)."""
        s = self.image_size
        centers = (np.arange(s) + 0.5) / s
        sigma = 1.0 / s  # one pixel: position is readable to sub-pixel precision from the blob
        gx = np.exp(-0.5 * ((centers - position[0]) / sigma) ** 2)
        gy = np.exp(-0.5 * ((centers[::-1] - position[1]) / sigma) ** 2)
        blob = gy[:, None] * gx[None, :]
        return np.maximum(self._background, blob).astype(np.float32)

    def _render_walls(self, s: int) -> np.ndarray:
        centers = (np.arange(s) + 0.5) / s
        xs, ys = np.meshgrid(centers, centers[::-1])
        img = np.zeros((s, s), dtype=np.float64)
        half_pixel = 0.5 / s  # a thin wall still covers at least one column of pixels
        for b in self.walls:
            inside = (xs > b[0] - half_pixel) & (xs < b[2] + half_pixel) & (ys > b[1]) & (ys < b[3])
            img[inside] = 0.5
        return img
