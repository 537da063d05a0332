"""The Gibbs sampler of the joint latent-normal multilevel model, one module per conditional.

``state``: the state record, static inputs and starting values; ``fixed``: B1, B2;
``random``: the level-1 random effects of all clusters at once; ``covariance``: Ω1, Ω2;
``missing``: missing cells; ``sweep``: one sweep composed from those (and the entry points
that choose between the two-level sampler and the general one, ``multi``); ``adapt``: step-size
tuning; ``linalg``: batched helpers.
"""

from .state import State, Static
from .sweep import initial_state, prepare_static, sweep, trace_names, trace_vector, variance_priors

__all__ = ["State", "Static", "initial_state", "prepare_static", "sweep", "trace_names", "trace_vector",
           "variance_priors"]
