"""SB3 features extractors over the flat TradingEnv observation (see :mod:`envs.layout`).

A frozen encoder's embedding of a window never changes, so :class:`EncoderExtractor` computes it once per
distinct (window, asset id) and serves it from a cache afterwards: PPO's rollouts and its epochs over the
same samples then cost a hash and a look-up per observation instead of an encoder forward pass.
Training fills the cache before it starts (:meth:`EncoderExtractor.prefill`, once per dataset row). The
observation, the saved policy and the learning are unchanged; the inputs of the policy are the
encoder's outputs (computed in another batch: equal up to float rounding of the batch's matmuls).
"""

from __future__ import annotations

import copy
from typing import Iterable

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from envs.layout import STATE_FIELDS, ObservationLayout


def _window_hashes(bits, n_window_values, assets, multipliers, first, second):  # pragma: no cover - compiled
    """:meth:`EncoderExtractor._hashes` in one pass (numba): ``bits`` is the observations' float32 array read
    as uint32; each pair of window values is the int64 its 8 bytes spell (little-endian, a zero after an odd
    last value); ``assets`` are the asset ids as stored (float32), rounded half to even as torch rounds."""
    n_words = (n_window_values + 1) // 2
    for i in range(bits.shape[0]):
        a = np.int64(0)
        b = np.int64(0)
        for j in range(n_words):
            low = np.uint64(bits[i, 2 * j])
            high = np.uint64(bits[i, 2 * j + 1]) if 2 * j + 1 < n_window_values else np.uint64(0)
            word = np.int64(low | (high << np.uint64(32)))
            a += word * multipliers[0, j]
            b += word * multipliers[1, j]
        asset = np.int64(np.rint(assets[i]))
        first[i] = a + asset * multipliers[0, n_words]
        second[i] = b + asset * multipliers[1, n_words]


try:
    import numba
except ImportError:  # pragma: no cover - numba is optional (the "fast" extra)
    numba = None
window_hashes_kernel = None if numba is None else numba.njit(cache=True, nogil=True)(_window_hashes)


class EncoderExtractor(BaseFeaturesExtractor):
    """Run a supervised encoder (MLP, LSTM/GRU + attention, CNN-LSTM) on the observation's window.

    Output: ``[encoder(window, asset id), position state]`` of size ``encoder.output_dim + 4``.

    :param observation_space: the env's flat Box.
    :param encoder: module ``(B, W, F) float32, (B,) int64 -> (B, output_dim)``, pretrained or fresh.
    :param window: bars in the observation window.
    :param n_features: features per bar.
    :param freeze: keep the encoder's weights fixed (and in eval mode) during RL training.
    :param cache_embeddings: with ``freeze``, compute each distinct window's embedding once and look it up
        afterwards (keyed by two independent 64-bit hashes of the window's bits and the asset id). The
        cache starts over whenever the encoder's weights change (loaded, stepped or copied into).
    :param max_cached: embeddings kept at most; the cache starts over when full.
    """

    def __init__(self, observation_space: gym.spaces.Box, encoder: nn.Module, window: int, n_features: int,
                 freeze: bool = False, cache_embeddings: bool = True, max_cached: int = 4_000_000) -> None:
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
        self.cache_embeddings = bool(freeze and cache_embeddings)
        self.max_cached = int(max_cached)
        generator = torch.Generator().manual_seed(20240611)
        # odd 63-bit multipliers per pair of window values (+ 1 for the asset id), two independent hashes
        multipliers = torch.randint(1, 2**62, (2, (layout.n_window_values + 1) // 2 + 1), generator=generator) * 2 + 1
        self._multipliers = multipliers  # a plain attribute: not part of the saved state
        self.clear_cache()

    def clear_cache(self) -> None:
        """Forget every cached embedding (after the encoder's weights changed)."""
        self._slot_of: dict[int, int] = {}  # first hash -> row of the stores below
        self._checks = torch.zeros(1024, dtype=torch.int64)  # second hash of each stored embedding
        self._embeddings = torch.zeros(1024, int(self.encoder.output_dim))
        self._stored = 0
        self._weights = self._weights_stamp()

    def _weights_stamp(self) -> tuple:
        """Identity and in-place version of every encoder tensor: any change of the weights (loading a
        state dict, an optimiser step, ``copy_``) changes it, and the cache starts over."""
        return tuple((id(t), t._version) for t in (*self.encoder.parameters(), *self.encoder.buffers()))

    def _hashes(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two int64 hashes per observation of its window's float32 bits and its asset id (wrapping sums);
        one compiled pass with numba (:func:`_window_hashes`, the same numbers), torch operations otherwise."""
        if window_hashes_kernel is not None and observations.device.type == "cpu" \
                and observations.dtype == torch.float32 and observations.is_contiguous():
            first = torch.empty(len(observations), dtype=torch.int64)
            second = torch.empty(len(observations), dtype=torch.int64)
            values = observations.numpy()
            window_hashes_kernel(values.view(np.uint32), self.layout.n_window_values,
                                 values[:, self.layout.asset_index], self._multipliers.numpy(), first.numpy(),
                                 second.numpy())
            return first, second
        return self._hashes_torch(observations)

    def _hashes_torch(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nw = self.layout.n_window_values
        window = observations[:, :nw]
        if nw % 2:  # pairs of float32 bits read as one int64
            window = torch.cat([window, torch.zeros_like(window[:, :1])], dim=1)
        flat = window.reshape(-1)
        if flat.storage_offset() % 2:  # int64 words must start at an even float32
            flat = flat.clone()
        words = flat.view(torch.int64).view(len(observations), -1)
        asset = self.layout.asset_id(observations).round().long()
        m = self._multipliers.to(observations.device)
        first = (words * m[0, :-1]).sum(dim=1) + asset * m[0, -1]
        second = (words * m[1, :-1]).sum(dim=1) + asset * m[1, -1]
        return first, second

    def _cached_embedding(self, observations: torch.Tensor) -> torch.Tensor:
        if self._weights_stamp() != self._weights:
            self.clear_cache()
        first, second = self._hashes(observations)
        if self._embeddings.device != observations.device:
            self._checks = self._checks.to(observations.device)
            self._embeddings = self._embeddings.to(observations.device)
        slot_of = self._slot_of
        slots = torch.tensor([slot_of.get(key, -1) for key in first.tolist()], dtype=torch.int64,
                             device=observations.device)
        hit = (slots >= 0) & (self._checks[slots.clamp(min=0)] == second)
        out = self._embeddings[slots.clamp(min=0)]  # rows that missed are overwritten below
        if bool(hit.all()):
            return out
        missed = torch.nonzero(~hit).squeeze(1)
        with torch.no_grad():
            embedding = self.encoder(self.layout.features(observations[missed]),
                                     self.layout.asset_id(observations[missed]).round().long())
        out[missed] = embedding
        # store each new key once (a first hash already taken by another window is computed, never stored)
        new: dict[int, int] = {}
        for i, key in enumerate(first[missed].tolist()):
            if key not in slot_of and key not in new:
                new[key] = i
        if new:
            if self._stored + len(new) > self.max_cached:
                self.clear_cache()
            chosen = torch.tensor(list(new.values()), dtype=torch.int64, device=observations.device)
            end = self._stored + len(new)
            if end > len(self._embeddings):  # grow by doubling
                size = max(end, 2 * len(self._embeddings))
                self._checks = torch.cat([self._checks, self._checks.new_zeros(size - len(self._checks))])
                self._embeddings = torch.cat(
                    [self._embeddings, self._embeddings.new_zeros(size - len(self._embeddings), embedding.shape[1])])
            self._checks[self._stored : end] = second[missed[chosen]]
            self._embeddings[self._stored : end] = embedding[chosen].detach()
            self._slot_of.update(zip(new, range(self._stored, end)))
            self._stored = end
        return out

    def prefill(self, observations: Iterable[np.ndarray]) -> int:
        """Compute and store the embeddings of these observations' windows now, in batches, so that training
        finds every one of them in the cache (a frozen encoder's embedding of a window never changes).

        :param observations: batches of flat observations; only their windows and asset ids are read
            (``envs.core.TradingCore.window_observations`` gives every window an env can observe).
        :return: the embeddings stored (0 without the cache).
        """
        if not self.cache_embeddings:
            return 0
        with torch.no_grad():
            for batch in observations:
                self._cached_embedding(torch.as_tensor(batch))
        return self._stored

    def train(self, mode: bool = True) -> "EncoderExtractor":
        super().train(mode)
        if self.freeze:
            self.encoder.eval()  # frozen: no dropout noise either
        return self

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        state = self.layout.state(observations)
        if self.cache_embeddings:
            return torch.cat([self._cached_embedding(observations), state], dim=1)
        windows = self.layout.features(observations)
        asset_ids = self.layout.asset_id(observations).round().long()
        if self.freeze:
            with torch.no_grad():
                embedding = self.encoder(windows, asset_ids)
        else:
            embedding = self.encoder(windows, asset_ids)
        return torch.cat([embedding, state], dim=1)
