"""SAC training state on disk, so an interrupted or extended training resumes where it stopped.

One file per problem (table, limits, settings): the networks, optimisers, entropy coefficient,
replay buffer, random states and the best policy probed so far, all as tensors and plain
values (loaded with weights_only=True, never a pickle); written to a temp file, then renamed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixprec.errors import MixprecError
from mixprec.files import atomic_path

CHECKPOINT_VERSION = 1
BUFFER_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


@dataclass
class BestPolicy:
    """The deterministic policy with the highest probed return so far, and its plan."""

    state: dict[str, torch.Tensor] | None = None
    plan: tuple[int, ...] = ()
    value: float = -float("inf")
    step: int = 0

    def offer(self, state: dict[str, torch.Tensor], plan: tuple[int, ...], value: float,
              step: int) -> None:  # fmt: skip
        if value > self.value:  # ties keep the earlier policy
            self.state = {k: v.detach().clone() for k, v in state.items()}
            self.plan, self.value, self.step = plan, value, step


def problem_key(arrays: Iterable[np.ndarray], settings: dict[str, Any]) -> str:
    """Same table, limits, fallback and settings -> same checkpoint file."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]


def save_checkpoint(agent: Any, best: BestPolicy, path: Path) -> None:
    """Everything a resumed training needs, keyed by the file name (the problem key)."""
    buffer = agent.replay_buffer
    filled = buffer.buffer_size if buffer.full else buffer.pos
    generator: tuple[Any, ...] = tuple(np.random.get_state())
    state = {
        "version": CHECKPOINT_VERSION,
        "key": path.stem,
        "num_timesteps": int(agent.num_timesteps),
        "n_updates": int(agent._n_updates),
        "episode_num": int(agent._episode_num),
        "policy": agent.policy.state_dict(),
        "actor_optimizer": agent.actor.optimizer.state_dict(),
        "critic_optimizer": agent.critic.optimizer.state_dict(),
        "log_ent_coef": None if agent.log_ent_coef is None else agent.log_ent_coef.detach(),
        "ent_coef_optimizer": None
        if agent.ent_coef_optimizer is None
        else agent.ent_coef_optimizer.state_dict(),
        "buffer": {f: torch.from_numpy(getattr(buffer, f)[:filled].copy()) for f in BUFFER_FIELDS},
        "buffer_pos": int(buffer.pos),
        "buffer_full": bool(buffer.full),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": [torch.from_numpy(generator[1].astype(np.int64)), *generator[2:]],
        "action_rng": json.dumps(agent.action_space.np_random.bit_generator.state),
        "best_state": best.state,
        "best_plan": list(best.plan),
        "best_value": best.value,
        "best_step": best.step,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(agent: Any, path: Path) -> BestPolicy:
    """Restore `agent` in place from `path`; the best policy recorded with it is returned."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # torch raises OSError, RuntimeError or UnpicklingError
        raise MixprecError(
            f"unreadable SAC checkpoint {path} ({type(err).__name__}); delete it to start over"
        ) from None
    if state.get("version") != CHECKPOINT_VERSION or state.get("key") != path.stem:
        raise MixprecError(f"SAC checkpoint {path} is for another problem; delete it to start over")
    agent.policy.load_state_dict(state["policy"])
    agent.actor.optimizer.load_state_dict(state["actor_optimizer"])
    agent.critic.optimizer.load_state_dict(state["critic_optimizer"])
    if state["log_ent_coef"] is not None:
        with torch.no_grad():
            agent.log_ent_coef.copy_(state["log_ent_coef"])
        agent.ent_coef_optimizer.load_state_dict(state["ent_coef_optimizer"])
    buffer = agent.replay_buffer
    kept = min(len(state["buffer"]["rewards"]), buffer.buffer_size)
    for field, values in state["buffer"].items():
        getattr(buffer, field)[:kept] = values[len(values) - kept :].numpy()
    buffer.pos, buffer.full = state["buffer_pos"], state["buffer_full"]
    if kept < len(state["buffer"]["rewards"]) or buffer.pos >= buffer.buffer_size:
        buffer.pos, buffer.full = 0, True  # a shorter training than the saved one: keep the last
    agent.num_timesteps = state["num_timesteps"]
    agent._n_updates = state["n_updates"]
    agent._episode_num = state["episode_num"]
    torch.set_rng_state(state["torch_rng"])
    keys, *rest = state["numpy_rng"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), *rest))
    agent.action_space.np_random.bit_generator.state = json.loads(state["action_rng"])
    best = BestPolicy()
    if state["best_state"] is not None:
        best = BestPolicy(state["best_state"], tuple(state["best_plan"]), state["best_value"],
                          state["best_step"])  # fmt: skip
    return best
