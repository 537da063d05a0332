"""The Prefect pipeline around :mod:`mlimpute`: the only package of mlimpute that imports Prefect.

Modules: :mod:`~mlimpute.pipeline.flow` (the flow), :mod:`~mlimpute.pipeline.tasks` and
:mod:`~mlimpute.pipeline.outputs` (its tasks), :mod:`~mlimpute.pipeline.store` (files tasks hand
each other, and the input read once per process), :mod:`~mlimpute.pipeline.checks` (config
against data, before Prefect starts), :mod:`~mlimpute.pipeline.runtime` (Prefect's environment,
API and task runners), :mod:`~mlimpute.pipeline.serve` (scheduled deployment),
:mod:`~mlimpute.pipeline.progress`. The deployable entry points in the repository's ``flows/``
folder import :mod:`mlimpute.pipeline.flow`.

Importing this package does not import Prefect (it takes seconds): ``mlimpute validate`` uses
only :mod:`~mlimpute.pipeline.checks`, which does not import it either.
"""
