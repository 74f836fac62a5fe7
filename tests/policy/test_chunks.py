"""Stored evaluation chunks: results run with the same settings are reused, with other settings refused."""

from __future__ import annotations

import json

import pytest

from thinkjepa.policy.chunks import agent_record, saved_chunk
from thinkjepa.policy.settings import AgentSettings


def test_a_chunk_stored_before_a_cost_field_existed_is_reused_and_one_with_another_cost_is_refused(tmp_path):
    settings = json.loads(json.dumps(agent_record(AgentSettings(reach_threshold=1.0))))
    old = json.loads(json.dumps(settings))
    del old["cost"]["quantile"]  # stored before PlanningCost had the field: its default then
    path = tmp_path / "chunk.json"
    path.write_text(json.dumps({"settings": old, "results": []}))
    assert saved_chunk(path, settings) == []
    other = json.loads(json.dumps(settings))
    other["cost"]["quantile"] = 0.1
    with pytest.raises(ValueError, match="other settings .*cost"):
        saved_chunk(path, other)
    assert saved_chunk(path, other, stale="replace") is None
