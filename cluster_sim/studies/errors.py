"""What can stop a study (or a plan) before it runs."""

from __future__ import annotations

from cluster_sim.scenario import ScenarioError


class StudyError(ScenarioError):
    """A study that cannot run: names the study file, the field path and the reason."""


class StudyRunError(Exception):
    """The study is fine but cannot start (e.g. the Ray cluster at --address cannot be reached)."""


class StudyLocked(StudyRunError):
    """Another sweep is writing into the same study folder."""
