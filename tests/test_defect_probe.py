"""The minimal-pair probe: clean clips against one TA defect, per kind that applies."""

import numpy as np

from rlhf.eval.defects import format_probe, probe_defects
from rlhf.synthetic.oracle import score


class OracleTA:
    """Any scorer with ``raw(videos, prompts) -> (N, 3)`` can be probed; this one reads the oracle."""

    def raw(self, videos, prompts):
        return np.array([[0.0, 0.0, score(v, p)["TA"]] for v, p in zip(videos, prompts)])


def test_probe_of_an_oracle_scorer_sees_every_full_strength_defect():
    rows = {"oracle-scorer": probe_defects(OracleTA(), "pair", prompts=6)}
    r = rows["oracle-scorer"]
    assert list(r) == ["wrong_colour", "wrong_shape", "wrong_direction", "wrong_speed", "swap", "wrong_relation"]
    for row in r.values():
        assert row["reward"] == row["oracle"]  # the scorer is the oracle
        assert row["clips"] == 6
    # a full-strength colour change, swap or relation change always costs the oracle TA (by construction)
    assert r["wrong_colour"]["oracle"] == r["swap"]["oracle"] == r["wrong_relation"]["oracle"] == 1.0
    assert r["swap"]["margin"] > 0.1
    md = format_probe(rows, "pair", "heldout")
    assert "| oracle-scorer |" in md and "swap" in md and "6 heldout pair prompts" in md


def test_single_object_prompts_probe_the_four_kinds_they_have():
    r = probe_defects(OracleTA(), "single", prompts=4)
    assert list(r) == ["wrong_colour", "wrong_shape", "wrong_direction", "wrong_speed"]
    assert r["wrong_colour"]["oracle"] == 1.0
