"""Chapter 13's checkers pass correct code and reject plausible mistakes."""
import pytest
import torch
import torchvision

from mrcnn_from_scratch.exercises import check_chain_rounds, check_greedy_keep, check_loop_syncs
from mrcnn_from_scratch.exercises.ch13 import chain_of_boxes, count_syncs, fixed_point_rounds, loop_nms
from mrcnn_from_scratch.ops.nms import overlap_graph


def fixed_point(overlaps, candidates, rounds=None, suppress_by="kept", respect_candidates=True):
    """The fixed point by hand; the keyword arguments switch on the plausible mistakes tested below."""
    # The mistake: every box takes part in the rounds, and only the result is limited to the candidates.
    taking_part = candidates if respect_candidates else torch.ones_like(candidates)
    kept = taking_part
    for _ in range(10**6 if rounds is None else rounds):
        by = {"kept": kept, "anyone": taking_part}[suppress_by]
        new_kept = taking_part & ~(overlaps & by[:, None]).any(dim=0)
        if rounds is None and torch.equal(new_kept, kept):
            break
        kept = new_kept
    return kept & candidates


def test_checkers_pass_correct_code(capsys):
    assert check_greedy_keep(fixed_point)
    assert check_greedy_keep(lambda overlaps, candidates: fixed_point_rounds(overlaps, candidates)[0])
    assert check_loop_syncs(lambda num_boxes, num_kept: 2 * num_kept)
    assert check_chain_rounds(lambda length: length)
    assert capsys.readouterr().out.count("✓") == 4


def test_the_fixed_point_and_the_loop_agree_with_torchvision():
    for length in (1, 2, 7, 40):
        boxes, scores = chain_of_boxes(length)
        kept, rounds = fixed_point_rounds(overlap_graph(boxes, 0.5), torch.ones(length, dtype=torch.bool))
        assert torch.equal(torch.where(kept)[0], torchvision.ops.nms(boxes, scores, 0.5))
        assert torch.equal(loop_nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))
        assert rounds == length


def test_the_counter_counts_two_reads_per_kept_box():
    boxes, scores = chain_of_boxes(9)  # keeps 5
    assert count_syncs(lambda: loop_nms(boxes, scores, 0.5)) == 10


@pytest.mark.parametrize("mistake, hint", [
    (lambda o, c: fixed_point(o, c, rounds=1), "only kept boxes suppress"),
    (lambda o, c: fixed_point(o, c, suppress_by="anyone"), "only kept boxes suppress"),
    (lambda o, c: fixed_point(o, c, rounds=8), "repeat until a round changes nothing"),
    (lambda o, c: fixed_point(o, c, rounds=32), "repeat until a round changes nothing"),
    (lambda o, c: fixed_point(o, c, respect_candidates=False), "not a candidate"),
    (lambda o, c: fixed_point(o | o.T, c), "only kept boxes suppress"),
    (lambda o, c: torch.where(fixed_point(o, c))[0], "bool mask"),
])
def test_greedy_keep_checker_rejects_mistakes(mistake, hint):
    with pytest.raises(AssertionError, match=hint):
        check_greedy_keep(mistake)


def test_greedy_keep_checker_reports_an_input_changed_in_place():
    def changes_candidates(overlaps, candidates):
        kept = fixed_point(overlaps, candidates)
        candidates[:] = False
        return kept

    with pytest.raises(AssertionError, match="in place"):
        check_greedy_keep(changes_candidates)


@pytest.mark.parametrize("prediction", [lambda n, k: k, lambda n, k: n, lambda n, k: 2 * n, lambda n, k: 2 * k + 1,
                                        lambda n, k: n + k, lambda n, k: "2K"])
def test_loop_syncs_checker_rejects_wrong_predictions(prediction):
    with pytest.raises(AssertionError, match="check_loop_syncs failed"):
        check_loop_syncs(prediction)


@pytest.mark.parametrize("prediction", [lambda L: L - 1, lambda L: L + 1, lambda L: (L + 1) // 2, lambda L: 1,
                                        lambda L: 8])
def test_chain_rounds_checker_rejects_wrong_predictions(prediction):
    with pytest.raises(AssertionError, match="check_chain_rounds failed"):
        check_chain_rounds(prediction)


def test_unfilled_stubs_raise_not_implemented():
    def stub(*args):
        raise NotImplementedError

    for checker in (check_greedy_keep, check_loop_syncs, check_chain_rounds):
        with pytest.raises(NotImplementedError):
            checker(stub)
