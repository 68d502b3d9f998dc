"""Counter-based random numbers as polars expressions.

Every random value is a pure function of (seed, stream, index): SplitMix64's finaliser applied to
``index * golden + key(seed, stream)`` in wrapping UInt64 arithmetic. No state is carried between rows
or chunks, so a table can be generated in any chunking (or in parallel) and comes out identical, and
the result does not depend on polars' own hash, which is not stable across versions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB
_HEX4 = pl.Series("hex4", [f"{i:04x}" for i in range(1 << 16)])


def _lit(value: int) -> pl.Expr:
    return pl.lit(value & _M64, dtype=pl.UInt64)


def _mix_int(x: int) -> int:
    """SplitMix64's finaliser on a Python int (used to derive stream keys)."""
    x &= _M64
    x = ((x ^ (x >> 30)) * _C1) & _M64
    x = ((x ^ (x >> 27)) * _C2) & _M64
    return x ^ (x >> 31)


def stream_key(seed: int, stream: str) -> int:
    """A 64-bit key per (seed, named stream); streams are independent sequences."""
    h = _mix_int(seed * _GOLDEN + 0x5EED)
    for ch in stream.encode():
        h = _mix_int(h ^ ch)
    return h


def _mix(x: pl.Expr) -> pl.Expr:
    # x >> k is x // 2**k on UInt64; products wrap modulo 2**64.
    x = x ^ (x // _lit(1 << 30))
    x = x * _lit(_C1)
    x = x ^ (x // _lit(1 << 27))
    x = x * _lit(_C2)
    return x ^ (x // _lit(1 << 31))


class Rng:
    """Random expressions for one seed; ``idx`` is an integer expression (the row's counter)."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def u64(self, stream: str, idx: pl.Expr) -> pl.Expr:
        key = stream_key(self.seed, stream)
        # Negative counters are fine: their two's-complement bit pattern is the input.
        return _mix(idx.cast(pl.Int64).reinterpret(signed=False) * _lit(_GOLDEN) + _lit(key))

    def uniform(self, stream: str, idx: pl.Expr) -> pl.Expr:
        """Float64 in [0, 1)."""
        return (self.u64(stream, idx) // _lit(1 << 11)).cast(pl.Float64) * (2.0**-53)

    def randint(self, stream: str, idx: pl.Expr, lo: int, hi: int) -> pl.Expr:
        """Int64 in [lo, hi)."""
        span = max(int(hi) - int(lo), 1)
        return (self.u64(stream, idx) % _lit(span)).cast(pl.Int64) + int(lo)

    def below(self, stream: str, idx: pl.Expr, bound: pl.Expr) -> pl.Expr:
        """Int64 in [0, bound) for a per-row bound expression (bound >= 1)."""
        return (self.u64(stream, idx) % bound.clip(1, None).cast(pl.UInt64)).cast(pl.Int64)

    def normal(self, stream: str, idx: pl.Expr) -> pl.Expr:
        """Standard normal (Box-Muller on two independent uniforms)."""
        u1 = 1.0 - self.uniform(stream + ".n1", idx)  # (0, 1]
        u2 = self.uniform(stream + ".n2", idx)
        return (-2.0 * u1.log()).sqrt() * (2.0 * math.pi * u2).cos()

    def lognormal(self, stream: str, idx: pl.Expr, median: float, sigma: float) -> pl.Expr:
        return (math.log(median) + sigma * self.normal(stream, idx)).exp()

    def index(self, stream: str, idx: pl.Expr, weights: Sequence[float]) -> pl.Expr:
        """An index into ``weights`` drawn with those relative weights (Int64)."""
        total = float(sum(weights))
        u = self.uniform(stream, idx)
        out: pl.Expr = pl.lit(0, dtype=pl.Int64)
        acc = 0.0
        for w in weights[:-1]:
            acc += w / total
            out = out + (u >= acc).cast(pl.Int64)
        return out

    def choice(
        self, stream: str, idx: pl.Expr, values: Sequence, weights: Sequence[float] | None = None
    ) -> pl.Expr:
        """One of ``values`` (uniform, or with relative ``weights``)."""
        series = pl.Series(values)
        if weights is None:
            pick = self.randint(stream, idx, 0, len(values))
        else:
            pick = self.index(stream, idx, weights)
        return pl.lit(series).gather(pick)

    def uuid(self, stream: str, idx: pl.Expr) -> pl.Expr:
        """A version-4-shaped UUID string, deterministic in (seed, stream, idx)."""
        hi = self.u64(stream + ".hi", idx)
        lo = self.u64(stream + ".lo", idx)

        def hex16(x: pl.Expr, k: int) -> pl.Expr:
            return pl.lit(_HEX4).gather(((x // _lit(1 << (16 * k))) % _lit(1 << 16)).cast(pl.Int64))

        # xxxxxxxx-xxxx-4xxx-Nxxx-xxxxxxxxxxxx with N in 8..b (RFC 4122 variant).
        version_nibble = hex16(hi, 0).str.slice(1, 3)
        variant = pl.lit(pl.Series(["8", "9", "a", "b"])).gather((lo % _lit(4)).cast(pl.Int64))
        return pl.concat_str(
            [
                hex16(hi, 3),
                hex16(hi, 2),
                pl.lit("-"),
                hex16(hi, 1),
                pl.lit("-4"),
                version_nibble,
                pl.lit("-"),
                variant,
                hex16(lo, 3).str.slice(1, 3),
                pl.lit("-"),
                hex16(lo, 2),
                hex16(lo, 1),
                hex16(lo, 0),
            ]
        )


def pick_weighted(cum_weights: pl.Series, u: pl.Expr, limit: pl.Expr | None = None) -> pl.Expr:
    """Index i (0-based) with probability proportional to weight i, by inverse CDF.

    ``cum_weights`` is the inclusive running sum of non-negative weights. With ``limit`` (an Int64
    expression, exclusive), only indexes < limit are eligible: used to pick only customers that already
    existed at a given time.
    """
    cum = pl.lit(cum_weights)
    if limit is None:
        total = float(cum_weights[-1])
        target = u * total
    else:
        lim = limit.clip(1, len(cum_weights))
        target = u * pl.lit(cum_weights).gather(lim - 1)
    return cum.search_sorted(target, side="right").cast(pl.Int64).clip(0, len(cum_weights) - 1)
