"""stable-baselines3's PPO with a leaner rollout loop and update, bit for bit the same training.

On this package's default agent (16 envs, a 749-float observation, 64x64 actor and critic) SB3's own
loop spends more of each rollout step in Python than in arithmetic: a dozen module calls, a
``torch.distributions.Categorical`` built and validated every step, tensors copied twice on their way into
the buffer. Its update copies each minibatch twice (numpy fancy index, then ``th.tensor``) and runs the
features extractor again on every minibatch of every epoch, although a flatten or a frozen encoder gives
the same features each time.

:class:`FastPPO` keeps SB3's algorithm and its order of operations, and cuts that overhead:

* rollouts: the actor and critic layers are called directly (no module hooks), the categorical
  distribution is its four tensor operations (normalised logits, softmax, one ``torch.multinomial``
  draw, a gather), a time limit's bootstrap value goes through the same layers, and the buffer is
  written in place;
* update: the features of the whole rollout are computed once per update when the extractor has no
  trainable weights (SB3's ``FlattenExtractor``, or :class:`agents.extractor.EncoderExtractor` with a
  frozen, cached encoder), and each minibatch is one ``index_select`` of them into a reused buffer; the
  loss is SB3's.

It draws the same random numbers in the same order (``np.random.permutation`` per epoch, one
``torch.multinomial`` per step) and runs the same floating-point operations on the same values, so a
``FastPPO`` trains to the same weights, bit for bit, as ``PPO`` with the same arguments and seed
(``tests/test_fast_ppo.py``). Settings it does not cover run SB3's own code: continuous (Gaussian) or
other non-categorical actions, gSDE, a policy other than SB3's actor-critic MLP policy, an extractor
that is not shared unless both are flattens. Saved models load with ``PPO.load``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import FlattenExtractor, MlpExtractor
from stable_baselines3.common.utils import explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch.distributions import Categorical
from torch.nn import functional as F

from .extractor import EncoderExtractor

_BUFFER_FIELDS = ("observations", "actions", "values", "log_probs", "advantages", "returns")
# what the lean paths compute in SB3's stead: a policy class that overrides any of them runs SB3's code
_POLICY_METHODS = ("forward", "evaluate_actions", "predict_values", "extract_features",
                   "_get_action_dist_from_latent", "obs_to_tensor")


def _chain(modules: Any) -> Callable[[th.Tensor], th.Tensor]:
    """``modules`` (an ``nn.Sequential``) applied in order through their ``forward`` methods, which is what
    ``Sequential.__call__`` computes when no hooks are registered (checked by :meth:`FastPPO._lean_ok`)."""
    forwards = [m.forward for m in modules]

    def run(x: th.Tensor) -> th.Tensor:
        for forward in forwards:
            x = forward(x)
        return x

    return run


def _has_hooks(module: th.nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in module.modules())


def _precomputable(extractor: th.nn.Module) -> bool:
    """True when the extractor's output for an observation does not depend on the batch it comes in or on
    trainable weights, so the features of a whole rollout can be computed once per update."""
    if isinstance(extractor, FlattenExtractor):
        return True
    return isinstance(extractor, EncoderExtractor) and extractor.cache_embeddings


class FastPPO(PPO):
    """SB3's PPO; rollouts and updates run leaner on the settings this package trains (discrete actions,
    SB3's MLP actor-critic policy, a flatten or :class:`~agents.extractor.EncoderExtractor` extractor) and
    give the same results bit for bit. See the module docstring."""

    def _lean_ok(self, buffer: Any = None) -> bool:
        """Whether the lean rollout and update reproduce SB3's: a categorical action distribution, SB3's
        actor-critic policy with its MLP extractor, SB3's plain rollout buffer (``buffer``, by default the
        model's), no gSDE, no hooks, one shared extractor (or two flattens)."""
        policy = self.policy
        if type(self.rollout_buffer if buffer is None else buffer) is not RolloutBuffer:
            return False
        if self.use_sde or any(getattr(type(policy), name) is not getattr(ActorCriticPolicy, name)
                               for name in _POLICY_METHODS):
            return False
        if not isinstance(policy.action_dist, CategoricalDistribution) or not isinstance(self.action_space,
                                                                                          spaces.Discrete):
            return False
        if not isinstance(policy.mlp_extractor, MlpExtractor) or not isinstance(self.observation_space, spaces.Box):
            return False
        if self.observation_space.dtype != np.float32 or len(self.observation_space.shape) != 1:
            return False
        if not policy.share_features_extractor and not (
                isinstance(policy.pi_features_extractor, FlattenExtractor)
                and isinstance(policy.vf_features_extractor, FlattenExtractor)):
            return False
        return not _has_hooks(policy)

    # ------------------------------------------------------------------ rollouts

    def collect_rollouts(self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer,
                         n_rollout_steps: int) -> bool:
        if not self._lean_ok(rollout_buffer):
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        assert self._last_obs is not None, "No previous observation was provided"
        policy = self.policy
        policy.set_training_mode(False)
        n_steps = 0
        rollout_buffer.reset()
        callback.on_rollout_start()

        extractor = policy.features_extractor if policy.share_features_extractor else None
        extract = (lambda obs: obs) if extractor is None or isinstance(extractor, FlattenExtractor) \
            else extractor.forward
        actor = _chain(policy.mlp_extractor.policy_net)
        critic = _chain(policy.mlp_extractor.value_net)
        action_net, value_net = policy.action_net.forward, policy.value_net.forward
        buffer = rollout_buffer

        while n_steps < n_rollout_steps:
            with th.no_grad():
                obs_tensor = th.as_tensor(self._last_obs, device=self.device)
                features = extract(obs_tensor.float())  # preprocess_obs of a Box (no copy for float32)
                # ActorCriticPolicy.forward: values first, then the distribution, one draw, its log-prob
                latent_pi, latent_vf = actor(features), critic(features)
                values = value_net(latent_vf)
                logits = action_net(latent_pi)
                logits = logits - logits.logsumexp(dim=-1, keepdim=True)  # Categorical(logits=...)
                probs = F.softmax(logits, dim=-1)
                sampled = th.multinomial(probs, 1, True)  # Categorical.sample: one draw per row
                log_probs = logits.gather(-1, sampled).squeeze(-1)
            actions = sampled.reshape(-1).cpu().numpy()
            clipped_actions = actions  # discrete: nothing to clip (named as SB3 names it, for callbacks)

            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs

            callback.update_locals(locals())
            if not callback.on_step():
                return False

            self._update_info_buffer(infos, dones)
            n_steps += 1
            actions = actions.reshape(-1, 1)

            # time limits: bootstrap with the value of the terminal observation (SB3 issue #633)
            for idx in np.flatnonzero(dones):
                if infos[idx].get("terminal_observation") is not None and infos[idx].get("TimeLimit.truncated",
                                                                                         False):
                    terminal_obs = th.as_tensor(infos[idx]["terminal_observation"], device=self.device)
                    with th.no_grad():  # policy.predict_values, through the same layers
                        terminal_value = value_net(critic(extract(terminal_obs.reshape(1, -1).float())))[0]
                    rewards[idx] += self.gamma * terminal_value

            pos = buffer.pos
            buffer.observations[pos] = self._last_obs
            buffer.actions[pos] = actions
            buffer.rewards[pos] = rewards
            buffer.episode_starts[pos] = self._last_episode_starts
            buffer.values[pos] = values.cpu().numpy().reshape(-1)
            buffer.log_probs[pos] = log_probs.cpu().numpy()
            buffer.pos += 1
            if buffer.pos == buffer.buffer_size:
                buffer.full = True
            self._last_obs = new_obs
            self._last_episode_starts = dones

        with th.no_grad():
            values = policy.predict_values(obs_as_tensor(new_obs, self.device))
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    # ------------------------------------------------------------------ update

    def train(self) -> None:
        if not self._lean_ok():
            return super().train()
        policy = self.policy
        policy.set_training_mode(True)
        self._update_learning_rate(policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        clip_range_vf = None
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]

        buffer = self.rollout_buffer
        assert buffer.full, "the rollout buffer is not full"
        n = buffer.buffer_size * buffer.n_envs
        batch_size = n if self.batch_size is None else self.batch_size

        # RolloutBuffer.get's swap_and_flatten (it draws no random number, so it can come before the
        # permutations), then the whole rollout as tensors without a copy
        if not buffer.generator_ready:
            for name in _BUFFER_FIELDS:
                buffer.__dict__[name] = buffer.swap_and_flatten(buffer.__dict__[name])
            buffer.generator_ready = True
        data = {name: th.as_tensor(buffer.__dict__[name], device=self.device) for name in _BUFFER_FIELDS}

        # the rollout's features once per update when they depend on neither the minibatch nor trainable
        # weights (not shared: _lean_ok allows two flattens only), gathered into one reused minibatch buffer
        features_all: th.Tensor | None = None
        if _precomputable(policy.features_extractor) if policy.share_features_extractor else True:
            with th.no_grad():  # a flatten, or a frozen encoder's cached embeddings + position state
                features_all = policy.extract_features(data["observations"])
            if isinstance(features_all, tuple):  # two flattens: the same features twice
                features_all = features_all[0]
            features_buffer = features_all.new_empty((min(batch_size, n), *features_all.shape[1:]))
        actor = _chain(policy.mlp_extractor.policy_net)
        critic = _chain(policy.mlp_extractor.value_net)

        entropy_losses, pg_losses, value_losses, clip_fractions = [], [], [], []
        approx_kl_divs: list[Any] = []
        continue_training = True
        loss = th.zeros(())
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            order = th.from_numpy(np.random.permutation(n)).to(self.device)  # RolloutBuffer.get's draw
            for start in range(0, n, batch_size):
                batch = order[start : start + batch_size]
                if features_all is not None:
                    # one reused buffer: a fresh 3 MB tensor each minibatch costs its page faults
                    if len(batch) == len(features_buffer):
                        features = th.index_select(features_all, 0, batch, out=features_buffer)
                    else:
                        features = features_all.index_select(0, batch)
                else:
                    features = policy.extract_features(data["observations"].index_select(0, batch))
                actions = data["actions"].index_select(0, batch).long().flatten()
                old_values = data["values"].index_select(0, batch).flatten()
                old_log_prob = data["log_probs"].index_select(0, batch).flatten()
                advantages = data["advantages"].index_select(0, batch).flatten()
                returns = data["returns"].index_select(0, batch).flatten()

                # ActorCriticPolicy.evaluate_actions
                latent_pi, latent_vf = actor(features), critic(features)
                distribution = Categorical(logits=policy.action_net.forward(latent_pi), validate_args=False)
                log_prob = distribution.log_prob(actions)
                values = policy.value_net.forward(latent_vf)
                entropy = distribution.entropy()

                # PPO.train, unchanged from here
                values = values.flatten()
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                ratio = th.exp(log_prob - old_log_prob)
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()
                pg_losses.append(policy_loss.item())
                clip_fractions.append(th.mean((th.abs(ratio - 1) > clip_range).float()).item())
                if clip_range_vf is None:
                    values_pred = values
                else:
                    values_pred = old_values + th.clamp(values - old_values, -clip_range_vf, clip_range_vf)
                value_loss = F.mse_loss(returns, values_pred)
                value_losses.append(value_loss.item())
                entropy_loss = -th.mean(entropy)
                entropy_losses.append(entropy_loss.item())
                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

                with th.no_grad():
                    log_ratio = log_prob - old_log_prob
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)
                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(policy.parameters(), self.max_grad_norm)
                policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(buffer.values.flatten(), buffer.returns.flatten())
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)


__all__ = ["FastPPO"]
