"""``secure_stats`` — count, sum, mean and histogram of a column across departments.

Steps (each a pure function over bytes, run by its owner):

1. requester   :func:`protocols.he.context.make_context`; publishes the public context and a
               :class:`StatsQuery` (column, statistics, bin edges, clip bounds, minimum group
               size, optional ε).
2. department  :func:`department_contribution` (the node's entry point): checks the query,
               enforces the minimum group size on its *own* rows, charges ε to its ledger,
               adds Laplace noise, encrypts one vector ``[count, sum, bin_0 … bin_k]``.
3. aggregator  :func:`sum_contributions` adds the vectors under encryption.
4. requester   :func:`decrypt_stats` decrypts only the total → :class:`StatsResult`.

Where the minimum group size is enforced, and why there: the requester holds the key, so
any check that runs *after* decryption runs too late. The departments therefore check
before they encrypt: each refuses (:class:`MinimumGroupSizeViolation`, nothing released)
if its own contribution to any released cell — the row count, or a histogram bin — has
between 1 and ``k − 1`` rows. An empty contribution (0 rows in a bin) is allowed: it
discloses nobody. Consequence: every non-zero cell of the total aggregates at least ``k``
rows of *each* department contributing to it, so also at least ``k`` in total, and even a
requester that colludes with the aggregator (and sees each department's contribution) sees
only cells of ``k`` or more rows. The price: it is stricter than checking the total (a bin
with 3 rows at one department and 9 at another is refused even though the total is 12) —
which is deliberate, because the department with 9 rows would otherwise learn the 3-row
aggregate of the other by subtraction.

Differential privacy (optional, ``epsilon``): each department adds its own Laplace noise
to its own contribution (local to its dataset; no trust in other departments needed), with
ε split evenly over the released groups (count, sum, histogram); sums are over values
clipped to ``[lower, upper]`` so their sensitivity is ``max(|lower|, |upper|)``. The noise
of n departments adds up (variance n·2b²) — the price of not trusting each other.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import tenseal as ts
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocols.crypto.sm3 import sm3_hex, sm3_kdf
from protocols.he.aggregate import check_complete, sum_envelopes
from protocols.he.budget import PrivacyLedger
from protocols.he.context import context_fingerprint, load_public_context, load_secret_context
from protocols.he.errors import (
    CiphertextSizeMismatch,
    InvalidInput,
    InvalidQuery,
    MaskError,
    MinimumGroupSizeViolation,
    QueryMismatch,
)
from protocols.he.masks import MaskGroup, mask_vectors
from protocols.he.wire import EnvelopeHeader, load_vectors, pack, unpack

Statistic = Literal["count", "sum", "mean", "histogram"]
MAX_BINS = 1000


class StatsQuery(BaseModel):
    """What the requester asks; every department sees exactly this (it is part of the manifest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    column: str = Field(min_length=1, max_length=128)
    statistics: tuple[Statistic, ...] = Field(min_length=1)
    bin_edges: tuple[float, ...] | None = None
    lower: float | None = Field(default=None, description="clip values to [lower, upper] before summing")
    upper: float | None = None
    min_group_size: int = Field(default=10, ge=1)
    epsilon: float | None = Field(
        default=None, gt=0, le=10, description="DP budget this query spends; None = no DP"
    )

    @field_validator("statistics")
    @classmethod
    def _canon(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"statistics repeated: {v}")
        order = ["count", "sum", "mean", "histogram"]
        return tuple(sorted(v, key=order.index))

    @model_validator(mode="after")
    def _consistent(self) -> StatsQuery:
        if "histogram" in self.statistics:
            e = self.bin_edges
            if e is None or len(e) < 2:
                raise ValueError("a histogram needs at least two bin edges")
            if len(e) - 1 > MAX_BINS:
                raise ValueError(f"at most {MAX_BINS} bins")
            if not all(math.isfinite(x) for x in e) or any(b <= a for a, b in zip(e, e[1:], strict=False)):
                raise ValueError("bin edges must be finite and strictly increasing")
        elif self.bin_edges is not None:
            raise ValueError("bin_edges given but no histogram requested (minimum necessary)")
        if (self.lower is None) != (self.upper is None):
            raise ValueError("give both lower and upper clip bounds, or neither")
        if self.lower is not None and self.upper is not None:
            if not (math.isfinite(self.lower) and math.isfinite(self.upper)) or self.lower >= self.upper:
                raise ValueError("clip bounds must be finite with lower < upper")
        if self.epsilon is not None and self.releases_sum and self.lower is None:
            raise ValueError("a differentially private sum or mean needs clip bounds (its sensitivity)")
        return self

    @property
    def releases_count(self) -> bool:
        """The row count is released (asked for, or needed for the mean)."""
        return "count" in self.statistics or "mean" in self.statistics

    @property
    def releases_sum(self) -> bool:
        """The sum is released (asked for, or needed for the mean)."""
        return "sum" in self.statistics or "mean" in self.statistics

    @property
    def n_bins(self) -> int:
        """Histogram bins (0 if no histogram)."""
        return len(self.bin_edges) - 1 if self.bin_edges is not None and "histogram" in self.statistics else 0

    @property
    def length(self) -> int:
        """Values in one contribution vector: [count?, sum?, bins…]."""
        return int(self.releases_count) + int(self.releases_sum) + self.n_bins

    @property
    def fingerprint(self) -> str:
        """SM3 of the canonical query; binds contributions to it."""
        return sm3_hex(self.model_dump_json().encode())

    def epsilon_split(self) -> dict[str, float]:
        """ε per released group (count, sum, histogram), split evenly (sequential composition)."""
        if self.epsilon is None:
            return {}
        groups = [
            g
            for g, on in (
                ("count", self.releases_count),
                ("sum", self.releases_sum),
                ("histogram", self.n_bins > 0),
            )
            if on
        ]
        return {g: self.epsilon / len(groups) for g in groups}


class StatsResult(BaseModel):
    """What the requester learns."""

    column: str
    count: float | None = None
    sum: float | None = None
    mean: float | None = None
    histogram: list[float] | None = None
    bin_edges: list[float] | None = None
    epsilon: float | None = None
    contributors: list[str]


def parse_query(spec: object) -> StatsQuery:
    """Validate a query from the wire (dict or JSON); :class:`InvalidQuery` names what is wrong."""
    try:
        if isinstance(spec, str | bytes):
            return StatsQuery.model_validate_json(spec)
        return StatsQuery.model_validate(spec)
    except ValidationError as exc:
        raise InvalidQuery(f"invalid statistics query: {exc}") from exc


def noise_rng(node_secret: bytes, charge_id: str, dataset_id: str) -> np.random.Generator:
    """A noise generator fixed by (node secret, charge, dataset): a retried run re-releases the same noise."""
    seed = sm3_kdf(node_secret + f"|dcp-dp|{charge_id}|{dataset_id}".encode(), 32)
    return np.random.Generator(np.random.PCG64(int.from_bytes(seed, "big")))


def _column(values: object) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"column values are not numeric: {exc}") from exc
    if arr.ndim != 1:
        raise InvalidInput(f"column values must be one-dimensional, got shape {arr.shape}")
    if np.isinf(arr).any():
        raise InvalidInput("column values contain ±inf")
    return arr[~np.isnan(arr)]  # NULLs are not counted, as in SQL aggregates


def plain_contribution(query: StatsQuery, values: object) -> np.ndarray:
    """The department's exact contribution ``[count?, sum?, bins…]``, after the minimum-group check.

    Raises :class:`MinimumGroupSizeViolation` naming every offending cell; nothing is returned then.
    """
    x = _column(values)
    k = query.min_group_size
    out: list[float] = []
    small: list[str] = []
    n = int(x.size)
    if query.releases_count or query.releases_sum:
        if 0 < n < k:
            small.append(f"rows={n}")
    if query.releases_count:
        out.append(float(n))
    if query.releases_sum:
        clipped = np.clip(x, query.lower, query.upper) if query.lower is not None else x
        out.append(float(clipped.sum()))
    if query.n_bins:
        assert query.bin_edges is not None
        counts, _ = np.histogram(x, bins=np.asarray(query.bin_edges))
        for i, c in enumerate(counts):
            if 0 < c < k:
                lo, hi = query.bin_edges[i], query.bin_edges[i + 1]
                small.append(f"bin[{lo:g}, {hi:g}{']' if i == query.n_bins - 1 else ')'}={int(c)}")
        out.extend(float(c) for c in counts)
    if small:
        raise MinimumGroupSizeViolation(
            f"column {query.column!r}: cells with fewer than {k} rows (nothing released): {', '.join(small)}",
            cells=small,
        )
    return np.asarray(out)


def add_noise(query: StatsQuery, contribution: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Laplace noise calibrated to each released group's sensitivity and ε share."""
    split = query.epsilon_split()
    if not split:
        return contribution
    noisy = contribution.copy()
    pos = 0
    if query.releases_count:
        noisy[pos] += rng.laplace(0.0, 1.0 / split["count"])
        pos += 1
    if query.releases_sum:
        assert query.lower is not None and query.upper is not None
        sens = max(abs(query.lower), abs(query.upper))
        noisy[pos] += rng.laplace(0.0, sens / split["sum"])
        pos += 1
    if query.n_bins:
        noisy[pos : pos + query.n_bins] += rng.laplace(0.0, 1.0 / split["histogram"], query.n_bins)
    return noisy


def encrypt_contribution(
    public_context: bytes,
    query: StatsQuery,
    contribution: np.ndarray,
    party: str,
    mask: tuple[MaskGroup, bytes] | None = None,
) -> bytes:
    """Encrypt a (checked, possibly noised) contribution vector into a ``stats`` envelope."""
    ctx = load_public_context(public_context)
    slots = ctx.seal_context().data.key_context_data().parms().poly_modulus_degree() // 2
    if contribution.shape != (query.length,):
        raise CiphertextSizeMismatch(
            f"contribution has shape {contribution.shape}, the query needs ({query.length},)"
        )
    if query.length > slots:
        raise InvalidQuery(f"{query.length} values do not fit one ciphertext of {slots} slots")
    room = (
        ctx.seal_context().data.first_context_data().total_coeff_modulus_bit_count()
        - math.log2(ctx.global_scale)
        - 2
    )
    vec = contribution.astype(np.float64)
    group: list[str] = []
    if mask is not None:
        g, private = mask
        if g.mask_bits + len(g.members).bit_length() + 8 > room:
            raise MaskError(
                f"masks of 2^{g.mask_bits} do not fit these parameters ({room:.0f} bits of headroom)"
            )
        vec = vec + mask_vectors(g, party, private, [query.length])[0]
        group = g.names
    if np.abs(contribution).max(initial=0.0) >= 2.0 ** (room - 8):
        raise InvalidInput(
            f"values up to {np.abs(contribution).max():g} are too large for these CKKS parameters"
        )
    ct = ts.ckks_vector(ctx, vec).serialize()
    header = EnvelopeHeader(
        kind="stats",
        context=context_fingerprint(public_context),
        sizes=[query.length],
        n_values=query.length,
        query=query.fingerprint,
        contributors=[party],
        mask_group=group,
    )
    return pack(header, [ct])


def department_contribution(
    public_context: bytes,
    query: StatsQuery,
    values: object,
    party: str,
    *,
    ledger: PrivacyLedger | None = None,
    dataset_id: str | None = None,
    charge_id: str | None = None,
    rng: np.random.Generator | None = None,
    mask: tuple[MaskGroup, bytes] | None = None,
    min_group_size: int | None = None,
) -> bytes:
    """A department's whole step: check, charge, noise, encrypt.

    ``min_group_size`` is the department's own policy value; the stricter of it and the
    query's applies. With ``query.epsilon`` set, ``ledger``, ``dataset_id`` and ``rng`` are
    required; ε is charged only after the minimum-group check passed and before anything is
    encrypted, so a refused query costs nothing and a released one is always paid for.
    """
    if min_group_size is not None and min_group_size > query.min_group_size:
        query = query.model_copy(update={"min_group_size": min_group_size})
    plain = plain_contribution(query, values)
    if query.epsilon is not None:
        if ledger is None or dataset_id is None or rng is None:
            raise InvalidQuery(
                "a differentially private query needs the node's ledger, the dataset id and a noise rng"
            )
        ledger.charge(
            dataset_id, charge_id or query.job_id, query.epsilon, purpose=f"secure_stats {query.column}"
        )
        plain = add_noise(query, plain, rng)
    return encrypt_contribution(public_context, query, plain, party, mask)


def sum_contributions(public_context: bytes, contributions: list[bytes]) -> bytes:
    """Aggregator: add every department's ``stats`` envelope under encryption."""
    return sum_envelopes(public_context, contributions, "stats")


def decrypt_stats(
    secret_context: bytes, query: StatsQuery, total: bytes, context: str | None = None
) -> StatsResult:
    """Requester: decrypt the total and derive count / sum / mean / histogram."""
    ctx = load_secret_context(secret_context)
    env = unpack(total, kind="stats", context=context)
    if env.header.query != query.fingerprint:
        raise QueryMismatch("the total answers a different query")
    if env.header.sizes != [query.length]:
        raise CiphertextSizeMismatch(
            f"the total holds {env.header.sizes} values, the query needs {query.length}"
        )
    check_complete(env.header)
    (vec,) = load_vectors(ctx, env)
    v = np.asarray(vec.decrypt())
    exact = query.epsilon is None
    fix = (lambda a: float(np.rint(a))) if exact else float  # exact counts come back as integers
    res = StatsResult(column=query.column, epsilon=query.epsilon, contributors=env.header.contributors)
    pos = 0
    if query.releases_count:
        res.count = fix(v[pos])
        pos += 1
    if query.releases_sum:
        res.sum = float(v[pos])
        pos += 1
    if query.n_bins:
        res.histogram = [fix(c) for c in v[pos : pos + query.n_bins]]
        res.bin_edges = list(query.bin_edges or ())
    if "mean" in query.statistics and res.count is not None and res.sum is not None:
        res.mean = res.sum / res.count if res.count > 0 else None
    return res
