"""Released agents: weights in the repository, verified by hash, loaded by name.

    from thinkjepa.policy import HierarchicalPolicy, FlatPolicy
    agent = HierarchicalPolicy.from_release("babyai-goto")
    flat = FlatPolicy.from_release("babyai-goto")      # same world model, planner and cost

:mod:`~thinkjepa.release.manifest` is the file format; :mod:`~thinkjepa.release.build` runs the training
chain that makes a release, one committed stage at a time.
"""

from thinkjepa.release.manifest import MANIFEST, Release, ReleaseError, release_root

__all__ = ["MANIFEST", "Release", "ReleaseError", "release_root"]
