"""Monotone maps from local uncertainties to expected local force errors (eV/A).

A map turns the local (aggregated) values u_jk of one or more uncertainty signals k of an atom j
of element Z into its expected local force error

    E_j = a_Z prod_k max(u_jk, floor_k) ** b_Zk,        a_Z > 0, b_Zk >= 0,

which never decreases when a signal grows. Forms:

- "alpha": one factor, b = 1 (seed 002 Eq. 3; one signal);
- "element-alpha": a factor a_Z per element, b = 1 (one signal);
- "power": one a and one exponent per signal for all elements;
- "element-power": a_Z and b_Zk per element.

Exponents are fitted by least squares of log e on log u with b >= 0 (scipy's `lsq_linear`);
then each prefactor is set so that the mean expected error of the atoms it serves equals their
mean error (a ratio of sums, as alpha is), so a map is mean-calibrated, per element for the
element forms, on the data it was fitted on. An element with fewer than MIN_ATOMS fitting atoms,
or one never seen, gets the pooled term.

`choose_map` picks the form by held-out likelihood: FOLDS-fold over frames, every held-out
atom's three force-error components scored under N(0, sigma_j^2), sigma_j = sqrt(pi/2) E_j, the
Gaussian whose mean absolute value is E_j (as in `evaluation`). Of the forms whose held-out NLL
is within NLL_MARGIN of the lowest it takes the simplest (FORMS is in order of richness): a
richer form must win clearly, not by the scatter between calibration sets. A power map
extrapolates beyond the largest uncertainty it saw, where a monitor's thresholds sit; an
isotonic (step) map would stay flat there, which is why it is not offered.

A map that gives the atoms of an element expected errors within CONSTANT_SPREAD of each other
(a power law whose exponents were fitted to ~0) cannot tell those atoms apart: its signal does
not rank the errors there (`constant_elements`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear

__all__ = ["CONSTANT_SPREAD", "FORMS", "NLL_MARGIN", "ErrorMap", "MapSamples", "Term",
           "choice_margin", "choose_map", "constant_elements", "describe_choice",
           "expected_error_ranges", "fit_map", "held_out_nll", "preferred_form"]

FORMS = ("alpha", "element-alpha", "power", "element-power")  # in order of richness
MIN_ATOMS = 50          # fewer fitting atoms of an element: it uses the pooled term
FOLDS = 5
# log needs positive values: local values below this fraction of the fitting data's median
# count as this fraction (aggregated uncertainties are positive; a GMM's NLL above its training
# floor can be 0 for the most typical environments)
FLOOR_FRACTION = 1e-3
# nats per force component: a richer form is chosen only when its held-out NLL is lower than a
# simpler one's by more than this. It is what a sigma 16 % too large on every atom costs
# (ln s + (1/s^2 - 1)/2 at s = 1.16); the forms' NLLs on issue 25's 8-frame calibration sets
# differed by at most 0.011, and the lowest one alone flipped between forms from set to set.
NLL_MARGIN = 0.02
# an element whose fitting atoms' expected errors lie within this fraction of each other
# (largest / smallest - 1) gets the same expected error for every atom: the map is constant
CONSTANT_SPREAD = 0.01
MAX_LOG = math.log(np.finfo(float).max)  # exp of more overflows


@dataclass(frozen=True)
class Term:
    """One element's (or the pooled) prefactor a (eV/A per unit^b) and exponents b_k >= 0."""

    prefactor: float
    exponents: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (isinstance(self.prefactor, (int, float)) and math.isfinite(self.prefactor)
                and self.prefactor > 0):
            raise ValueError(f"prefactor must be a positive number, got {self.prefactor!r}")
        if not all(isinstance(b, (int, float)) and math.isfinite(b) and b >= 0
                   for b in self.exponents):
            raise ValueError(f"exponents must be numbers >= 0 (a map that never decreases), "
                             f"got {list(self.exponents)!r}")


@dataclass
class MapSamples:
    """Fitting data, one row per atom: `error` (N,) local force error (eV/A), `signals` (N, K)
    local values of the map's signals, `numbers` (N,) atomic numbers, `frame` (N,) the frame
    each atom belongs to, `force_error` (N, 3) the atom's own force error (eV/A)."""

    error: np.ndarray
    signals: np.ndarray
    numbers: np.ndarray
    frame: np.ndarray
    force_error: np.ndarray

    def subset(self, rows) -> "MapSamples":
        return MapSamples(self.error[rows], self.signals[rows], self.numbers[rows],
                          self.frame[rows], self.force_error[rows])


@dataclass(frozen=True)
class ErrorMap:
    """E_j = a_Z prod_k max(u_jk, floor_k)^b_Zk for the named `signals` (see the module)."""

    form: str
    signals: tuple[str, ...]
    floors: tuple[float, ...]
    pooled: Term
    elements: dict[int, Term]

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}, got {self.form!r}")
        if not self.signals or len(self.floors) != len(self.signals):
            raise ValueError(f"one floor per signal: {list(self.signals)} vs {list(self.floors)}")
        if self.form in ("alpha", "element-alpha") and len(self.signals) != 1:
            raise ValueError(f"form {self.form} takes one signal, got {list(self.signals)}")
        for term in (self.pooled, *self.elements.values()):
            if len(term.exponents) != len(self.signals):
                raise ValueError(f"{len(term.exponents)} exponents for {len(self.signals)} "
                                 "signals")
        if not all(isinstance(f, (int, float)) and f >= 0 for f in self.floors):
            raise ValueError(f"floors must be numbers >= 0, got {list(self.floors)}")

    def term(self, number: int) -> Term:
        """The term of element `number` (the pooled one if it has none)."""
        return self.elements.get(int(number), self.pooled)

    def expected_error(self, signals, numbers) -> np.ndarray:
        """Expected local force error (eV/A) of atoms with local `signals` (N, K) (or (N,) for
        one signal) and atomic `numbers` (N,)."""
        values = np.asarray(signals, dtype=float)
        values = values.reshape(len(values), -1)
        if values.shape[1] != len(self.signals):
            raise ValueError(f"the map takes {len(self.signals)} signals "
                             f"({', '.join(self.signals)}), got {values.shape[1]}")
        numbers = np.asarray(numbers)
        clamped = np.maximum(values, self.floors)
        result = np.empty(len(values))
        for number in np.unique(numbers):
            rows = numbers == number
            term = self.term(number)
            result[rows] = term.prefactor * np.prod(clamped[rows] ** np.array(term.exponents),
                                                    axis=1)
        return result

    def uncertainty_limits(self, error: float, numbers) -> dict[int, float]:
        """Per element of `numbers`, the local uncertainty at which the expected error reaches
        `error` (eV/A): (error / a_Z)^(1/b_Z), for a one-signal map. A constant term (b_Z = 0,
        or so near it that the power leaves the floats) gives inf where error > a_Z (never
        reached) and the floor where error < a_Z (always exceeded)."""
        if len(self.signals) != 1:
            raise ValueError(f"a map of {len(self.signals)} signals has no single uncertainty "
                             "limit; compare the expected error itself")
        limits = {}
        for number in sorted({int(z) for z in numbers}):
            term = self.term(number)
            b = term.exponents[0]
            # in logs: with b near 0, (error / a)^(1/b) overflowed
            log_limit = math.log(error / term.prefactor) / b if b > 0 else math.copysign(
                math.inf, math.log(error / term.prefactor))
            limit = math.exp(log_limit) if log_limit < MAX_LOG else math.inf
            limits[number] = max(limit, self.floors[0])
        return limits

    def to_dict(self) -> dict:
        return {"form": self.form, "signals": list(self.signals), "floors": list(self.floors),
                "pooled": _term_dict(self.pooled),
                "elements": {str(z): _term_dict(t) for z, t in sorted(self.elements.items())}}

    @classmethod
    def from_dict(cls, document: dict) -> "ErrorMap":
        """The map `to_dict` wrote; ValueError naming what is missing or wrong."""
        if not isinstance(document, dict):
            raise ValueError(f"map must be a JSON object, got {document!r}")
        missing = [k for k in ("form", "signals", "floors", "pooled", "elements")
                   if k not in document]
        if missing:
            raise ValueError(f"map lacks {', '.join(missing)}")
        try:
            elements = {int(z): _term(t) for z, t in document["elements"].items()}
            return cls(form=document["form"], signals=tuple(document["signals"]),
                       floors=tuple(document["floors"]), pooled=_term(document["pooled"]),
                       elements=elements)
        except (TypeError, KeyError, AttributeError) as err:
            raise ValueError(f"malformed map: {err!r}") from None


def _term_dict(term: Term) -> dict:
    return {"prefactor": term.prefactor, "exponents": list(term.exponents)}


def _term(document: dict) -> Term:
    return Term(prefactor=document["prefactor"], exponents=tuple(document["exponents"]))


def fit_map(form: str, samples: MapSamples, signals: tuple[str, ...]) -> ErrorMap:
    """The map of `form` fitted on `samples` (see the module)."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)} or 'auto', got {form!r}")
    values = samples.signals
    power = form in ("power", "element-power")
    floors = tuple(float(FLOOR_FRACTION * np.median(v[v > 0])) if power and np.any(v > 0)
                   else 0.0 for v in values.T)
    clamped = np.maximum(values, floors)
    error = samples.error

    def term(rows) -> Term:
        exponents = _log_slopes(error[rows], clamped[rows]) if power else (1.0,) * values.shape[1]
        predicted = np.prod(clamped[rows] ** np.array(exponents), axis=1)
        if not (error[rows].sum() > 0 and predicted.sum() > 0):
            raise ValueError(f"cannot fit form {form}: errors and uncertainties must have "
                             f"positive sums, got {error[rows].sum():g} and {predicted.sum():g}")
        return Term(float(error[rows].sum() / predicted.sum()), exponents)

    pooled = term(slice(None))
    elements = {}
    if form.startswith("element-"):
        for number in np.unique(samples.numbers):
            rows = samples.numbers == number
            if rows.sum() >= MIN_ATOMS:
                elements[int(number)] = term(rows)
    return ErrorMap(form, tuple(signals), floors, pooled, elements)


def _log_slopes(error: np.ndarray, clamped: np.ndarray) -> tuple[float, ...]:
    """Exponents b >= 0 of the least-squares fit log e = c + sum_k b_k log u_k (atoms with a
    zero error left out)."""
    keep = error > 0
    design = np.column_stack([np.ones(keep.sum()), np.log(clamped[keep])])
    lower = np.r_[-np.inf, np.zeros(clamped.shape[1])]
    solution = lsq_linear(design, np.log(error[keep]), bounds=(lower, np.inf)).x
    return tuple(float(b) for b in solution[1:])


def gaussian_nll(expected_error: np.ndarray, force_error: np.ndarray) -> float:
    """Mean negative log-likelihood (nats per force component) of `force_error` (N, 3) under
    N(0, sigma_j^2) with sigma_j = sqrt(pi/2) x `expected_error` (N,)."""
    sigma = math.sqrt(math.pi / 2) * np.repeat(expected_error, 3)
    components = np.asarray(force_error).ravel()
    return float(np.mean(0.5 * np.log(2 * math.pi * sigma**2)
                         + components**2 / (2 * sigma**2)))


def held_out_nll(form: str, samples: MapSamples, signals: tuple[str, ...],
                 folds: int = FOLDS, seed: int = 0) -> float:
    """`gaussian_nll` of every atom under the map of `form` fitted without its frame's fold."""
    frames = np.unique(samples.frame)
    folds = min(folds, len(frames))
    assignment = dict(zip(np.random.default_rng(seed).permutation(frames),
                          np.arange(len(frames)) % folds))
    fold_of_atom = np.array([assignment[f] for f in samples.frame])
    expected = np.empty(len(samples.error))
    for fold in range(folds):
        held = fold_of_atom == fold
        fitted = fit_map(form, samples.subset(~held), signals)
        expected[held] = fitted.expected_error(samples.signals[held], samples.numbers[held])
    return gaussian_nll(expected, samples.force_error)


def choose_map(samples: MapSamples, signals: tuple[str, ...],
               forms=None, seed: int = 0) -> tuple[ErrorMap, dict[str, float]]:
    """The `preferred_form` by `held_out_nll` among `forms` (all that take len(signals) signals
    when None), fitted on all samples, and every candidate's held-out NLL."""
    if forms is None:
        forms = FORMS if len(signals) == 1 else ("power", "element-power")
    if len(np.unique(samples.frame)) < 2:
        raise ValueError("choosing a map by held-out likelihood needs at least two frames")
    scores = {form: held_out_nll(form, samples, signals, seed=seed) for form in forms}
    return fit_map(preferred_form(scores), samples, signals), scores


def preferred_form(scores: dict[str, float]) -> str:
    """Of the forms scored (held-out NLL, nats per force component), the simplest (FORMS order)
    whose NLL is within NLL_MARGIN of the lowest."""
    lowest = min(scores.values())
    return next(form for form in FORMS if form in scores and scores[form] <= lowest + NLL_MARGIN)


def choice_margin(scores: dict[str, float], chosen: str) -> tuple[str, float] | None:
    """The form the choice of `chosen` was weighed against and NLL(chosen) - NLL(that form),
    nats per force component: the lowest richer form when it is lower (a positive difference,
    at most NLL_MARGIN for `preferred_form`), else the lowest simpler form (negative: by how
    much `chosen` won), else the lowest richer form (0 or negative). None for one form."""
    rank = FORMS.index(chosen)
    richer = {f: v for f, v in scores.items() if FORMS.index(f) > rank}
    simpler = {f: v for f, v in scores.items() if FORMS.index(f) < rank}
    lower_richer = richer and min(richer.values()) < scores[chosen]
    weighed = richer if lower_richer else simpler or richer
    if not weighed:
        return None
    other = min(weighed, key=weighed.get)
    return other, scores[chosen] - weighed[other]


def describe_choice(scores: dict[str, float], chosen: str) -> str:
    """How clearly the held-out NLLs `scores` chose the form `chosen` (`preferred_form`), in
    words, e.g. "alpha is kept although power is lower by 0.011, within the 0.02 ..."."""
    margin = choice_margin(scores, chosen)
    if margin is None:
        return f"{chosen}, the only form tried"
    other, difference = margin
    if difference > 0:
        return (f"{chosen} is kept although {other} is lower by {difference:.3f}, within the "
                f"{NLL_MARGIN:g} by which a richer form must win")
    if FORMS.index(other) < FORMS.index(chosen):
        return (f"{chosen} is lower than the simpler {other} by {-difference:.3f}, more than "
                f"the {NLL_MARGIN:g} by which a richer form must win")
    return f"{chosen} is the lowest, {-difference:.3f} below {other}"


def expected_error_ranges(error_map: ErrorMap, samples: MapSamples) -> dict[int, tuple]:
    """Per element of `samples`, the smallest and largest expected error (eV/A) the map gives
    its atoms."""
    expected = error_map.expected_error(samples.signals, samples.numbers)
    return {int(z): (float(expected[samples.numbers == z].min()),
                     float(expected[samples.numbers == z].max()))
            for z in np.unique(samples.numbers)}


def constant_elements(error_map: ErrorMap, samples: MapSamples) -> list[int]:
    """The elements with two or more atoms in `samples` to which the map gives expected errors
    within CONSTANT_SPREAD of each other."""
    ranges = expected_error_ranges(error_map, samples)
    return [z for z, (low, high) in ranges.items()
            if np.sum(samples.numbers == z) > 1 and high <= low * (1 + CONSTANT_SPREAD)]
