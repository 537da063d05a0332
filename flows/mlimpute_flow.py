"""Deployable entry point of the mlimpute pipeline (``flows/mlimpute_flow.py:pipeline``).

Thin on purpose: the flow and its tasks live in :mod:`mlimpute.pipeline.flow`, installed with
the package; this file only gives ``prefect deploy`` (see ``prefect.yaml`` beside it) a path to
point at.
"""

from mlimpute.pipeline.flow import pipeline

__all__ = ["pipeline"]
