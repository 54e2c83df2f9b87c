"""Online SAC against a real Gymnasium env: the behaviour-policy trainer behind ``zoo data collect``.

``train_online`` runs the registered SAC learner (sac.md) with one env, uniform random actions for the
first ``start_steps``, one update per env step from a device-resident replay buffer, and a deterministic
evaluation every ``eval_every`` steps on freshly seeded envs run in parallel (a Gymnasium vector env).
The result keeps a checkpoint per evaluation and the replay data as whole episodes in collection order,
which is what the data-collection code turns into ``medium``/``expert``/``medium-replay`` datasets.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from zoo.learners.networks import TanhGaussianActor
from zoo.learners.sac import SAC
from zoo.protocols import Batch, EnvSpec
from zoo.registry import create

# Online defaults that differ from the offline recipes (sac.md §5): faster actor and temperature.
ONLINE_LEARNER_DEFAULTS: dict[str, Any] = {"actor_lr": 3e-4, "alpha_lr": 3e-4}
EVAL_SEED_OFFSET = 1_000_003  # evaluation envs never share seeds with the training env


@dataclass
class OnlineCheckpoint:
    """The actor after ``step`` env steps and its mean deterministic evaluation return."""

    step: int
    eval_return: float
    actor_state: dict[str, torch.Tensor]  # CPU copies
    eval_returns: list[float] = field(default_factory=list)


class DeterministicPolicy:
    """Behaviour-policy interface (zoo.data.collect): ``act(obs [B, d_s]) -> actions [B, d_a]`` (numpy),
    a_max · tanh(μ(s)), and a ``name``."""

    def __init__(self, actor: TanhGaussianActor, device: torch.device | str = "cpu", name: str = "sac") -> None:
        self.actor = actor.to(device).eval()
        self.name = name
        self.device = torch.device(device)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        single = x.dim() == 1
        a, _, _ = self.actor.sample(x.unsqueeze(0) if single else x, deterministic=True)
        out = a.cpu().numpy()
        return out[0] if single else out

    __call__ = act


class SampledPolicy(DeterministicPolicy):
    """Behaviour-policy interface that samples a = a_max · tanh(μ + σ ⊙ ξ) from the actor, as D4RL's MuJoCo
    ``medium``/``expert`` data were generated (its files carry ``infos/action_log_probs``).

    ``seed(seed)`` resets the noise stream; ``act_with_log_prob`` also returns log π(a|s) of each action
    (the tanh-corrected density of sac.md §1), which the collector stores beside the actions.
    """

    def __init__(self, actor: TanhGaussianActor, device: torch.device | str = "cpu", name: str = "sac") -> None:
        super().__init__(actor, device, name)
        self.generator = torch.Generator(device=self.device).manual_seed(0)

    def seed(self, seed: int) -> None:
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))

    @torch.no_grad()
    def act_with_log_prob(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(actions [B, d_a], log π(a|s) [B]) for a batch of observations."""
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        a, _, logp = self.actor.sample(x, deterministic=False, generator=self.generator)
        return a.cpu().numpy(), logp[:, 0].double().cpu().numpy()

    def act(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs)
        single = x.ndim == 1
        actions, _ = self.act_with_log_prob(x[None] if single else x)
        return actions[0] if single else actions

    __call__ = act


@dataclass
class OnlineRun:
    """Checkpoints (one per evaluation) and the replay data as whole episodes in collection order."""

    env_id: str
    seed: int
    spec: EnvSpec
    learner_cfg: dict[str, Any]  # the resolved SAC config
    checkpoints: list[OnlineCheckpoint] = field(default_factory=list)
    # keys: observations [T+1, d_s], actions [T, d_a], rewards [T], terminations [T], truncations [T]
    episodes: list[dict[str, np.ndarray]] = field(default_factory=list)
    episode_end_steps: list[int] = field(default_factory=list)  # env step at which each episode ended
    steps: int = 0
    wall_s: float = 0.0
    learner: SAC | None = None

    def best(self) -> OnlineCheckpoint:
        """The checkpoint with the highest evaluation return (the last of equals)."""
        if not self.checkpoints:
            raise ValueError("this run has no checkpoints; evaluate at least once (eval_every <= steps)")
        return max(reversed(self.checkpoints), key=lambda c: c.eval_return)

    def policy(
        self, checkpoint: OnlineCheckpoint | int | None = None, device: str = "cpu", sampled: bool = False
    ) -> DeterministicPolicy:
        """The policy of a checkpoint (an object, an index, or None for the last one): deterministic actions,
        or with ``sampled`` actions drawn from its stochastic distribution (:class:`SampledPolicy`)."""
        if checkpoint is None or isinstance(checkpoint, int):
            if not self.checkpoints:
                raise ValueError("this run has no checkpoints")
            checkpoint = self.checkpoints[-1 if checkpoint is None else checkpoint]
        policy = policy_from_state(self.spec, self.learner_cfg, checkpoint.actor_state, device, sampled=sampled)
        policy.name = f"sac-{self.env_id}-seed{self.seed}-step{checkpoint.step}" + ("-sampled" if sampled else "")
        return policy


def policy_from_state(
    spec: EnvSpec,
    learner_cfg: dict[str, Any],
    actor_state: dict[str, torch.Tensor],
    device: str = "cpu",
    sampled: bool = False,
) -> DeterministicPolicy:
    """Rebuild the actor of a SAC config (hidden sizes, log-std bounds) and load ``actor_state`` into it;
    a :class:`SampledPolicy` when ``sampled``, else a :class:`DeterministicPolicy`."""
    cfg = SAC.Config(**learner_cfg)
    actor = TanhGaussianActor(
        spec.obs_dim, spec.act_dim, list(cfg.hidden), spec.act_scale, cfg.log_std_min, cfg.log_std_max
    )
    actor.load_state_dict(actor_state)
    return SampledPolicy(actor, device) if sampled else DeterministicPolicy(actor, device)


def env_spec(env: gym.Env) -> EnvSpec:
    """EnvSpec of a Box-action env with symmetric bounds (a = a_max · tanh(u), sac.md §1)."""
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"online SAC needs a continuous (Box) action space, got {space}")
    low, high = np.asarray(space.low, dtype=np.float64), np.asarray(space.high, dtype=np.float64)
    if not (np.allclose(low, -high) and np.allclose(high, high.flat[0])):
        raise ValueError(f"online SAC needs symmetric, equal action bounds; got low={low}, high={high}")
    obs_dim = int(np.prod(env.observation_space.shape))
    return EnvSpec(obs_dim, int(np.prod(space.shape)), float(-high.flat[0]), float(high.flat[0]))


class _ReplayBuffer:
    """Preallocated device tensors; uniform sampling with replacement."""

    def __init__(self, capacity: int, spec: EnvSpec, device: torch.device) -> None:
        def zeros(d: int) -> torch.Tensor:
            return torch.zeros(capacity, d, device=device)

        self.obs, self.next_obs = zeros(spec.obs_dim), zeros(spec.obs_dim)
        self.act, self.reward, self.terminal = zeros(spec.act_dim), zeros(1), zeros(1)
        self.capacity, self.size, self.device = capacity, 0, device

    def add(self, obs: np.ndarray, act: np.ndarray, reward: float, next_obs: np.ndarray, terminal: bool) -> None:
        i = self.size % self.capacity
        self.obs[i] = torch.as_tensor(obs, dtype=torch.float32)
        self.act[i] = torch.as_tensor(act, dtype=torch.float32)
        self.reward[i, 0] = float(reward)
        self.next_obs[i] = torch.as_tensor(next_obs, dtype=torch.float32)
        self.terminal[i, 0] = float(terminal)
        self.size += 1

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        idx = torch.randint(min(self.size, self.capacity), (n,), device=self.device, generator=generator)
        return Batch(
            obs=self.obs[idx],
            act=self.act[idx],
            reward=self.reward[idx],
            next_obs=self.next_obs[idx],
            terminal=self.terminal[idx],
            is_model=torch.zeros(n, 1, device=self.device),
        )


@torch.no_grad()
def evaluate(
    env_id: str, actor: TanhGaussianActor, episodes: int, seed: int, device: torch.device | str = "cpu"
) -> list[float]:
    """Undiscounted returns of ``episodes`` deterministic episodes, run in parallel on seeded fresh envs."""
    envs = gym.make_vec(env_id, num_envs=episodes, vectorization_mode="sync")
    try:
        obs, _ = envs.reset(seed=seed)
        returns = np.zeros(episodes)
        running = np.ones(episodes, dtype=bool)
        while running.any():
            a, _, _ = actor.sample(torch.as_tensor(obs, dtype=torch.float32, device=device), deterministic=True)
            obs, reward, term, trunc, _ = envs.step(a.cpu().numpy())
            returns += np.where(running, reward, 0.0)
            running &= ~(term | trunc)
        return returns.tolist()
    finally:
        envs.close()


def train_online(
    env_id: str,
    steps: int = 10_000,
    seed: int = 0,
    learner_cfg: dict[str, Any] | None = None,
    start_steps: int = 1000,
    batch_size: int = 256,
    eval_every: int = 1000,
    eval_episodes: int = 5,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> OnlineRun:
    """Train SAC online on ``env_id`` for ``steps`` env steps (one update per step after ``start_steps``)."""
    device = torch.device(device)
    torch.manual_seed(seed)
    np_rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    env = gym.make(env_id)
    spec = env_spec(env)
    cfg = {**ONLINE_LEARNER_DEFAULTS, **(learner_cfg or {})}
    learner: SAC = create("learner", "sac", spec, device, **cfg)
    learner.generator = generator
    resolved = copy.deepcopy(vars(learner.cfg))
    run = OnlineRun(env_id=env_id, seed=seed, spec=spec, learner_cfg=resolved, learner=learner)
    buffer = _ReplayBuffer(steps, spec, device)
    low, high = env.action_space.low, env.action_space.high

    t0 = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    ep: dict[str, list[Any]] = {k: [] for k in ("observations", "actions", "rewards", "terminations", "truncations")}
    ep["observations"].append(obs)
    metrics: dict[str, torch.Tensor] = {}

    def close_episode(step: int) -> None:
        run.episodes.append(
            {
                "observations": np.asarray(ep["observations"], dtype=np.float32),
                "actions": np.asarray(ep["actions"], dtype=np.float32),
                "rewards": np.asarray(ep["rewards"], dtype=np.float32),
                "terminations": np.asarray(ep["terminations"], dtype=bool),
                "truncations": np.asarray(ep["truncations"], dtype=bool),
            }
        )
        run.episode_end_steps.append(step)

    for t in range(1, steps + 1):
        if t <= start_steps:
            action = np_rng.uniform(low, high).astype(np.float32)
        else:
            with torch.no_grad():
                a, _, _ = learner.act(
                    torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0), generator=generator
                )
            action = a[0].cpu().numpy()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, float(reward), next_obs, bool(terminated))  # timeouts bootstrap
        for key, value in zip(ep, (next_obs, action, float(reward), bool(terminated), bool(truncated)), strict=True):
            ep[key].append(value)
        obs = next_obs
        if terminated or truncated:
            close_episode(t)
            obs, _ = env.reset()
            ep = {k: [] for k in ep}
            ep["observations"].append(obs)

        if t > start_steps and buffer.size >= batch_size:
            metrics = learner.update(buffer.sample(batch_size, generator))

        if t % eval_every == 0 or t == steps:
            returns = evaluate(env_id, learner.actor, eval_episodes, EVAL_SEED_OFFSET + seed, device)
            state = {k: v.detach().cpu().clone() for k, v in learner.actor.state_dict().items()}
            run.checkpoints.append(OnlineCheckpoint(t, float(np.mean(returns)), state, returns))
            if progress:
                extra = " ".join(f"{k}={float(v):.3g}" for k, v in metrics.items())
                print(
                    f"[online {env_id} seed={seed}] step {t}/{steps} eval {np.mean(returns):.1f} "
                    f"({time.perf_counter() - t0:.0f}s) {extra}",
                    file=sys.stderr,
                    flush=True,
                )

    if ep["actions"]:  # the unfinished last episode is cut here: marked truncated
        ep["truncations"][-1] = True
        close_episode(steps)
    env.close()
    run.steps = steps
    run.wall_s = time.perf_counter() - t0
    return run
