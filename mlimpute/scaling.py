"""Internal centring and scaling: the sampler works on standardised variables and covariates,
everything it reports is on the data's scale.

Why
---
The default priors (inverse-Wishart with scale I for every covariance) and the samplers' step
sizes mean different things at different scales: on studentratings with MathAchiev ≈ 500 (SD
92), four chains disagreed about a level-2 covariance (R-hat 1.9, bulk ESS 6) where the same
run on standardised variables gave R-hat ≤ 1.05. With ``ImputationModel(standardize=True)``
(the default) the model is fitted to

    y* = (y − m_y) / s_y        every continuous variable, at its own level (m, s: mean and SD
                                of its observed values; categorical latents are already on
                                the unit scale and stay as they are)
    x* = x / d_x                every covariate column but the intercept (d: its SD)

and every prior is defined on that scale, so the defaults mean the same thing for any units
of measurement: the imputations of ``a + b·y`` are ``a + b·`` (those of y) in distribution, and
the same draws where the rows keep their canonical order (that order hashes the rows' values,
so rescaled values usually reorder them and another stream of draws follows;
``tests/test_scaling.py`` holds the order fixed to check the draws).
Covariates are scaled but not centred: with an intercept in every design, centring would only
move the intercepts (their prior is flat) and, for a random-slope covariate, rotate the random
effects, which would make the reported level-2 covariances a transformation of several
monitored ones instead of each a multiple of one.

Reporting: every monitored parameter is an affine function of one internal parameter,
θ = a + b θ* (``trace_affine``): B's coefficient of covariate x in variable v has b = s_v / d_x
and, for the intercept, a = m_v; a covariance between coordinates k and l has b = c_k c_l with
c the scale of each coordinate (s_v for a variable's residual or intercept effect, s_v / d_x for
its random slope on x, 1 for a categorical latent or a log-variance effect); thresholds and
variance-function coefficients are unchanged (unit-free). R-hat and ESS are invariant to such
maps. A prior the user states (``prior_l1``, ``prior_l2``) is on the data's scale and is
mapped to the internal one (Ψ* = C⁻¹ Ψ C⁻¹, C = diag(c)); ``categorical_prior_sd`` is on the
latent scale per SD of each covariate. ``standardize=False`` runs on the data's scale (jomo's
convention; its defaults then depend on the units). A substantive model's own parameters stay
on the data's scale (their priors come from the complete-case fit, in the data's units): its
formula reads each incomplete variable's value as m + s·y* (``sampler/outcome.py``,
``_outcome_kernels.cells``). Before, a substantive model switched the scaling off, and an
incomplete covariate with a small SD (a proportion, SD 0.01) was imputed with 6.8 times its
observed SD under the identity prior scale.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = ["Scaling", "standardize", "column_scales", "TraceMap"]


@dataclass(frozen=True)
class Scaling:
    """Centres and scales of the model's columns (see the module notes). ``y1``, ``y2`` and
    each ``classes[c]`` give (centre, scale) per latent column of that level (0 and 1 for
    categorical latents); ``x1``, ``x2``, ``z`` and ``class_x[c]`` the scale per design column."""

    y1: tuple[np.ndarray, np.ndarray]
    y2: tuple[np.ndarray, np.ndarray]
    x1: np.ndarray
    x2: np.ndarray
    z: np.ndarray
    classes: tuple = ()
    class_x: tuple = ()

    def level(self, data, level) -> tuple[np.ndarray, np.ndarray]:
        """(centre, scale) of the latent columns measured at ``level`` (1, 2 or a name)."""
        if level == 1:
            return self.y1
        if level == 2:
            return self.y2
        k = next(i for i, c in enumerate(data.classes) if c.name == level)
        return self.classes[k]


def _sd(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    if v.size < 2:
        return 1.0
    s = float(v.std())
    return s if s > 0 and np.isfinite(s) else 1.0


def column_scales(y: np.ndarray, miss: np.ndarray, codecs, level) -> tuple[np.ndarray, np.ndarray]:
    """(centre, scale) of every latent column of one level: mean and SD of a continuous
    variable's observed values, (0, 1) for categorical latents."""
    p = y.shape[1]
    centre, scale = np.zeros(p), np.ones(p)
    for c in codecs:
        if c.level != level or c.kind != "continuous":
            continue
        k = c.cols[0]
        obs = y[~miss[:, k], k]
        obs = obs[np.isfinite(obs)]
        if obs.size:
            centre[k] = float(obs.mean())
            scale[k] = _sd(obs)
    return centre, scale


def _design_scales(x: np.ndarray, names) -> np.ndarray:
    return np.array([1.0 if n == "Intercept" else _sd(x[:, k]) for k, n in enumerate(names)])


def _apply(y: np.ndarray, cs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray((y - cs[0]) / cs[1])


def standardize(data):
    """``data`` with its continuous variables centred and scaled and its covariate columns
    scaled, the scales kept in ``data.scaling`` (module notes); unchanged when the model says
    ``standardize=False``."""
    if not data.model.standardize:
        return data
    y1s = column_scales(data.y1, data.miss1, data.codecs, 1)
    y2s = column_scales(data.y2, data.miss2, data.codecs, 2)
    x1s = _design_scales(data.x1, data.x1_names)
    x2s = _design_scales(data.x2, data.x2_names)
    zs = np.array([x1s[data.x1_names.index(n)] if n in data.x1_names else _sd(data.z[:, k])
                   for k, n in enumerate(data.z_names)])
    zs[0] = 1.0
    classes, cys, cxs = [], [], []
    for cd in data.classes:
        cy = column_scales(cd.y, cd.miss, cd.codecs, cd.name)
        cx = _design_scales(cd.x, cd.x_names)
        classes.append(replace(cd, y=_apply(cd.y, cy), x=np.ascontiguousarray(cd.x / cx)))
        cys.append(cy)
        cxs.append(cx)
    scaling = Scaling(y1=y1s, y2=y2s, x1=x1s, x2=x2s, z=zs, classes=tuple(cys), class_x=tuple(cxs))
    return replace(data, y1=_apply(data.y1, y1s), y2=_apply(data.y2, y2s),
                   x1=np.ascontiguousarray(data.x1 / x1s), x2=np.ascontiguousarray(data.x2 / x2s),
                   z=np.ascontiguousarray(data.z / zs), classes=tuple(classes), scaling=scaling)


def unscale_values(data, codec, values: np.ndarray) -> np.ndarray:
    """A continuous variable's internal values on the data's scale (others unchanged)."""
    if data.scaling is None or codec.kind != "continuous":
        return values
    centre, scale = data.scaling.level(data, codec.level)
    k = codec.cols[0]
    return centre[k] + scale[k] * values


def prior_scale(scale: np.ndarray, coord: np.ndarray | None) -> np.ndarray:
    """A prior scale matrix stated on the data's scale, on the internal one (C⁻¹ Ψ C⁻¹)."""
    if coord is None:
        return scale
    return scale / np.outer(coord, coord)


def level2_coordinates(data) -> np.ndarray | None:
    """Scale of each coordinate of the two-level model's Ω2: (vec U1 variable-major over z,
    then the level-2 variables)."""
    s = data.scaling
    if s is None:
        return None
    u1 = (s.y1[1][:, None] / s.z[None, :]).ravel()
    return np.concatenate([u1, s.y2[1]])


class TraceMap:
    """The (a, b) of θ = a + b θ* for a sampler's monitored parameters, built in trace order."""

    def __init__(self) -> None:
        self.offset: list[float] = []
        self.factor: list[float] = []

    def coefficients(self, centre: np.ndarray, scale: np.ndarray, xs: np.ndarray) -> None:
        """vec(B') (variable-major) of variables with these centres and scales on a design with
        these column scales, the intercept first: b = s_v / d_x, a = m_v for the intercept."""
        for v in range(scale.size):
            self.factor.extend(scale[v] / xs)
            self.offset.extend([centre[v]] + [0.0] * (xs.size - 1))

    def covariances(self, coord: np.ndarray, i: np.ndarray, j: np.ndarray) -> None:
        """Elements (i, j) of a covariance whose coordinates have scales ``coord``."""
        self.factor.extend(coord[i] * coord[j])
        self.offset.extend([0.0] * len(i))

    def unchanged(self, n: int) -> None:
        """n unit-free parameters (thresholds, variance-function coefficients, a df)."""
        self.factor.extend([1.0] * n)
        self.offset.extend([0.0] * n)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array(self.offset), np.array(self.factor)
