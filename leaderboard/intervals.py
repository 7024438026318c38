"""Uncertainty of a leaderboard number: a two-level bootstrap over test clips and readout seeds.

A group's statistic is the mean over its seeds of each seed's weighted per-clip mean Σ w·v / Σ w
(the record's primary metric). One bootstrap draw resamples the clips with replacement — one
draw of clip indices shared by all seeds, since every seed is scored on the same test clips —
and the seeds with replacement (with one seed, only the clips). ``DRAWS`` draws from fixed RNG
streams give the percentile 95% interval, so a rebuild gives the same numbers.

Every group with the same number of clips uses the same clip draws, so two groups on one split
compare clip by clip (paired); seed draws come from a stream named by the group, so they are
independent between groups.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

DRAWS = 2000
RNG_SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Bootstrap:
    """A group's statistic (``estimate``), its ``draws`` over resampled clips and seeds, and its clip count."""

    estimate: float
    draws: np.ndarray  # (DRAWS,); NaN where a draw's clips carry no weight
    n_clips: int

    def interval(self) -> tuple[float, float]:
        """The percentile interval at ``LEVEL``."""
        return _interval(self.draws)


@dataclass(frozen=True)
class Comparison:
    """A against B: the fraction of draws in which A is better, and the interval of (A − B) signed so
    that positive means A is better."""

    p_better: float
    interval: tuple[float, float]

    @property
    def significant(self) -> bool:
        """A is better at the 2.5% one-sided level: the whole interval lies above 0."""
        return self.interval[0] > 0


def _interval(draws: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2
    low, high = np.nanquantile(draws, [tail, 1 - tail])
    return float(low), float(high)


def _counts(n: int, rng: np.random.Generator) -> np.ndarray:
    """(DRAWS, n) multiplicities of ``n`` items drawn with replacement ``n`` times, once per draw."""
    return rng.multinomial(n, np.full(n, 1 / n), size=DRAWS).astype(float)


@functools.lru_cache(maxsize=None)
def clip_counts(n_clips: int) -> np.ndarray:
    """The clip draws every group with ``n_clips`` clips shares (read-only)."""
    counts = _counts(n_clips, np.random.default_rng([RNG_SEED, n_clips]))
    counts.flags.writeable = False
    return counts


def seed_counts(n_seeds: int, stream: str) -> np.ndarray:
    """Seed draws from the RNG stream named ``stream`` (a group's name): independent across groups."""
    key = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "little")
    return _counts(n_seeds, np.random.default_rng([RNG_SEED, key]))


def weighted_means(counts: np.ndarray, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(draws, seeds) weighted means Σ c·w·v / Σ c·w of every seed's clips under every draw of
    ``counts`` (draws, clips); NaN where a draw picked only zero-weight clips."""
    num, den = np.split(np.vstack([weights * values, weights]) @ counts.T, 2)  # one product, (seeds, draws) each
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0).T


def bootstrap(values: np.ndarray, weights: np.ndarray, stream: str) -> Bootstrap:
    """The bootstrap of a group from its (seeds, clips) per-clip ``values`` and ``weights``."""
    values, weights = np.asarray(values, float), np.asarray(weights, float)
    seeds, n_clips = values.shape
    estimate = float(np.mean((weights * values).sum(1) / weights.sum(1)))
    per_seed = weighted_means(clip_counts(n_clips), values, weights)
    draws = (per_seed * seed_counts(seeds, stream)).sum(1) / seeds
    return Bootstrap(estimate, draws, n_clips)


def compare(a: Bootstrap, b: Bootstrap, higher_is_better: bool) -> Comparison | None:
    """A against B on the same clips (paired through the shared clip draws); None when their clip
    counts differ, as then they were not scored on the same clips."""
    if a.n_clips != b.n_clips:
        return None
    diff = (a.draws - b.draws) * (1 if higher_is_better else -1)
    diff = diff[~np.isnan(diff)]
    return Comparison(float(np.mean(diff > 0)), _interval(diff))
