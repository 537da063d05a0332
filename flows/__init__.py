"""The Prefect pipeline around :mod:`mlimpute` (DESIGN §4); the library never imports it.

Modules: :mod:`flows.pipeline` (the flow), :mod:`flows.tasks` and :mod:`flows.outputs` (its
tasks), :mod:`flows.store` (files tasks hand each other), :mod:`flows.checks` (config against
data, before Prefect starts), :mod:`flows.runtime` (Prefect's environment, API and task
runners), :mod:`flows.serve` (scheduled deployment), :mod:`flows.progress`.

Importing this package does not import Prefect (it takes seconds): ``mlimpute validate`` uses
only :mod:`flows.checks`.
"""
