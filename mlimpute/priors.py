"""The inverse-Wishart priors of the random-effect covariances, on the sampler's scale.

A prior the user states (``prior_l2``, ``priors``) is on the data's scale and is mapped to the
internal one (``mlimpute.scaling``); the default, the identity with df the dimension, is
defined on the internal scale. Here so that the model's checks before sampling
(``design``) and the samplers read the same resolution without one importing the other
(``data`` is a ``design.ModelData``).
"""

from __future__ import annotations

import numpy as np

from .errors import SpecError
from .scaling import level2_coordinates, prior_scale

__all__ = ["level2_prior", "class_coordinate_names", "class_coordinates", "class_prior"]


def level2_prior(data) -> tuple[np.ndarray, float]:
    """Ω2's inverse-Wishart prior (scale, df) on the sampler's scale: a scale the user states
    is on the data's scale and is mapped; the default (I) is defined on the sampler's."""
    model = data.model
    scale, df = model.prior_l2.resolve(data.y1.shape[1] * data.z.shape[1] + data.y2.shape[1], "level-2")
    if data.scaling is not None and model.prior_l2.scale is not None:
        scale = prior_scale(scale, level2_coordinates(data))
    return scale, df


def class_coordinate_names(data, ci: int) -> list[str]:
    """Names of classification c's effect coordinates: level-1 variables, then the variables of
    the classifications nested in it, its log-variance effects, then its own variables."""
    cd = data.classes[ci]
    names = list(data.y1_names)
    for b in cd.parent:
        names += list(data.classes[b].y_names)
    names += [f"logvar({v.name})" for v in data.variances if v.re == ci]
    return names + list(cd.y_names)


def class_coordinates(data, ci: int) -> np.ndarray | None:
    """The data's scale of each coordinate of classification c's Ω^(c), in ``class_coordinate_names``'
    order (None without internal scaling)."""
    sc = data.scaling
    if sc is None:
        return None
    cd = data.classes[ci]
    coord = [sc.y1[1]]
    coord += [sc.classes[b][1] for b in cd.parent]
    coord.append(np.ones(sum(1 for v in data.variances if v.re == ci)))
    coord.append(sc.classes[ci][1])
    return np.concatenate(coord)


def class_prior(data, ci: int) -> tuple[np.ndarray, float]:
    """Ω^(c)'s inverse-Wishart prior (scale, df) on the sampler's scale: ``model.priors`` of the
    classification (a stated scale is on the data's scale), else the identity with df its
    dimension; a stated scale of the wrong size is refused naming the coordinates."""
    cd = data.classes[ci]
    names = class_coordinate_names(data, ci)
    stated = data.model.priors.get(cd.name)
    if stated is None:
        return np.eye(len(names)), float(len(names))
    try:
        scale, df = stated.resolve(len(names), f"classification {cd.name!r}")
    except SpecError as exc:
        raise SpecError(f"{exc} (its coordinates, in order: {', '.join(names)})") from None
    if stated.scale is not None:
        scale = prior_scale(scale, class_coordinates(data, ci))
    return scale, df
