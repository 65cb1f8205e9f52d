"""Double DQN on top of stable-baselines3's DQN (which has n-step returns, but not double Q-learning).

Double DQN (van Hasselt, Guez & Silver 2016): the TD target values the next state's action chosen by the
online network with the target network, ``r + gamma * Q_target(s', argmax_a Q_online(s', a))``, which
removes the max operator's upward bias. On noisy rewards such as a bar's log return, that bias favours
whichever action had lucky draws.
"""

from __future__ import annotations

import numpy as np
import torch as th
from stable_baselines3 import DQN
from torch.nn import functional as F


class DoubleDQN(DQN):
    """SB3's DQN with the double-Q target; everything else (n-step buffer, target updates, saving) is DQN's.
    Saved models load with ``DQN.load`` too: the network and its parameters are the same."""

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        losses = []
        for _ in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
            with th.no_grad():
                next_actions = self.q_net(replay_data.next_observations).argmax(dim=1, keepdim=True)
                next_q_values = th.gather(self.q_net_target(replay_data.next_observations), 1, next_actions)
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values
            current_q_values = th.gather(self.q_net(replay_data.observations), 1, replay_data.actions.long())
            loss = F.smooth_l1_loss(current_q_values, target_q_values)
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", np.mean(losses))


__all__ = ["DoubleDQN"]
