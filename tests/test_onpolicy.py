"""On-policy evaluation: pairs, rater labels and accuracies against counts made by hand."""

import numpy as np
import pytest

from rlhf.eval.onpolicy import onpolicy_table, rater_labels, within_group_pairs
from rlhf.synthetic.annotator import AnnotatorConfig


def test_pairs_are_every_within_prompt_pair():
    assert within_group_pairs([0, 0, 1, 1, 1, 2]).tolist() == [[0, 1], [2, 3], [2, 4], [3, 4]]
    assert within_group_pairs([0, 1, 2]).shape == (0, 2)


def test_accuracies_equal_a_count_by_hand():
    # One prompt, four clips -> six pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3). VQ column only varies;
    # MQ and TA are copies so their tables are checked against the same hand count.
    oracle_vq = np.array([0.50, 0.60, 0.505, 0.90])
    reward_vq = np.array([1.0, 2.0, 3.0, 0.0])
    oracle = np.repeat(oracle_vq[:, None], 3, axis=1)
    reward = np.repeat(reward_vq[:, None], 3, axis=1)
    pairs = within_group_pairs([0, 0, 0, 0])
    labels_vq = np.array([-1, 0, -1, 1, -1, -1])  # the raters' say on the six pairs (one tie)
    labels = np.repeat(labels_vq[:, None], 3, axis=1)
    t = onpolicy_table(reward, oracle, pairs, labels)["VQ"]
    # reward margins r_i - r_j: -1, -2, +1, -1, +2, +3
    # without ties (the five pairs labelled -1, -1, 1, -1, -1): only (0,1) has the label's sign -> 1/5
    assert t["without_ties"] == pytest.approx(1 / 5)
    assert t["tie_share"] == pytest.approx(1 / 6)
    # with ties, predicted tie when |m| <= e: e = 0 -> (0,1) right: 1/6; e = 1 -> ties on (0,1), (0,3),
    # (1,2), none a tie, and (0,2) is not called one: 0; e = 2 -> (0,2) the only right call: 1/6; e = 3 ->
    # all called ties: 1/6. The best, at the smallest e: 1/6.
    assert t["with_ties"] == pytest.approx(1 / 6)
    # oracle differences: -0.1, -0.005, -0.4, 0.095, -0.3, -0.395: the ceiling (oracle as the reward)
    # gets every non-tie label right (its signs are -, -, -, +, -, -) -> 5/5 without ties; with ties,
    # e = 0.005 predicts (0,2) as the tie -> 6/6
    assert t["ceiling_without_ties"] == pytest.approx(1.0)
    assert t["ceiling_with_ties"] == pytest.approx(1.0)
    # oracle order: pairs with |d| > 0.01 are five (all but (0,2)); the reward agrees on (0,1) alone -> 1/5
    assert t["oracle_order_pairs"] == 5
    assert t["oracle_order"] == pytest.approx(1 / 5)
    assert onpolicy_table(reward, oracle, pairs, labels)["TA"] == t


def test_rater_labels_follow_the_rao_kupper_probabilities():
    # Equal scores: P(A) = P(B) = 1 / (1 + k), P(same) = 1 - 2 / (1 + k) (Rao-Kupper with D = 0).
    cfg = AnnotatorConfig(tie_k=4.5, temperature=0.03)
    oracle = np.zeros((2, 3))
    pairs = np.tile([[0, 1]], (6000, 1))
    labels = rater_labels(oracle, pairs, seed=3, annotator=cfg)
    share = labels.shape[0] * labels.shape[1]
    assert np.sum(labels == 0) / share == pytest.approx(1 - 2 / 5.5, abs=0.015)
    assert np.sum(labels == 1) / share == pytest.approx(1 / 5.5, abs=0.015)
    # A difference of 10 temperatures is always seen: the label is its sign.
    far = rater_labels(np.array([[0.6, 0.0, 0.3], [0.0, 0.6, 0.3]]), np.array([[0, 1]]), seed=1, annotator=cfg)
    assert far[0, :2].tolist() == [1, -1]
    # Labels of a pair depend on its position and the seed only, not on the pairs drawn after it.
    assert (rater_labels(oracle, pairs[:10], seed=3, annotator=cfg) == labels[:10]).all()


def test_mismatched_scores_are_refused():
    with pytest.raises(ValueError, match="clips, 3"):
        onpolicy_table(np.zeros((4, 3)), np.zeros((3, 3)), within_group_pairs([0, 0, 0]), np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="no within-prompt pairs"):
        onpolicy_table(np.zeros((2, 3)), np.zeros((2, 3)), within_group_pairs([0, 1]), np.zeros((0, 3), int))
