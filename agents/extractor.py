"""SB3 features extractors over the flat TradingEnv observation (see :mod:`envs.layout`)."""

from __future__ import annotations

import copy

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from envs.layout import STATE_FIELDS, ObservationLayout


class EncoderExtractor(BaseFeaturesExtractor):
    """Run a supervised encoder (MLP, LSTM/GRU + attention, CNN-LSTM) on the observation's window.

    Output: ``[encoder(window, asset id), position state]`` of size ``encoder.output_dim + 4``.

    :param observation_space: the env's flat Box.
    :param encoder: module ``(B, W, F) float32, (B,) int64 -> (B, output_dim)``, pretrained or fresh.
    :param window: bars in the observation window.
    :param n_features: features per bar.
    :param freeze: keep the encoder's weights fixed (and in eval mode) during RL training.
    """

    def __init__(self, observation_space: gym.spaces.Box, encoder: nn.Module, window: int, n_features: int,
                 freeze: bool = False) -> None:
        layout = ObservationLayout(window, n_features)
        layout.check(int(observation_space.shape[0]), "the env's observation")
        super().__init__(observation_space, features_dim=int(encoder.output_dim) + len(STATE_FIELDS))
        self.layout = layout
        # a copy per extractor: DQN builds an online and a target network from the same kwargs
        self.encoder = copy.deepcopy(encoder)
        self.freeze = freeze
        if freeze:
            for parameter in self.encoder.parameters():
                parameter.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> "EncoderExtractor":
        super().train(mode)
        if self.freeze:
            self.encoder.eval()  # frozen: no dropout noise either
        return self

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        windows = self.layout.features(observations)
        asset_ids = self.layout.asset_id(observations).round().long()
        state = self.layout.state(observations)
        if self.freeze:
            with torch.no_grad():
                embedding = self.encoder(windows, asset_ids)
        else:
            embedding = self.encoder(windows, asset_ids)
        return torch.cat([embedding, state], dim=1)
