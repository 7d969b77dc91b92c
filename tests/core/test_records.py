"""The records of current state: instance and node records, read and written."""

from __future__ import annotations

import json

import pytest

from daprdockr.core.records import NodeRecord
from daprdockr.errors import ValidationError


def test_a_node_record_says_hollow_only_when_it_is_and_ignores_fields_it_does_not_know() -> None:
    docker = NodeRecord(node_id="n1", address="127.0.0.11", capacity=3)
    assert "runtime" not in docker.to_dict()  # read the same by agents from before the field
    assert NodeRecord.from_dict(docker.to_dict(), node_id="n1") == docker
    hollow = NodeRecord(node_id="h1", address="127.0.0.11", runtime="hollow")
    assert hollow.to_dict()["runtime"] == "hollow"
    assert NodeRecord.from_dict(json.loads(json.dumps(hollow.to_dict())), node_id="h1") == hollow
    newer = {**docker.to_dict(), "zone": "eu-1", "gpus": 2}  # written by a later version
    assert NodeRecord.from_dict(newer, node_id="n1") == docker
    with pytest.raises(ValidationError, match="runtime"):
        NodeRecord.from_dict({**docker.to_dict(), "runtime": 7}, node_id="n1")
