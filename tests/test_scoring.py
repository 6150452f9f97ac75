"""Candidate scores: the patent's segmentation confidence over the covered locations
(``SCORE_FROM covered``) against hand-computed answers, and the centre rule."""

import torch

from polar_refine.modeling import LocationGenerator, covered_confidence
from polar_refine.modeling.candidates import confidence_maps, cover_window, select_candidates


def _one_level(cat0, cat1, ctr, size=9, stride=8):
    """One 2-class level: probability maps given as functions of (x, y) cells."""
    prob = torch.zeros(1, 3, size, size)
    for y in range(size):
        for x in range(size):
            prob[0, :, y, x] = torch.tensor([cat0(x, y), cat1(x, y), ctr(x, y)])
    locs = LocationGenerator([stride], [])([prob])
    return [prob], locs


def test_covered_score_and_class_of_a_known_polygon():
    """A 12 px circle around cell (4, 4) at stride 8 covers its 3 x 3 block (the diagonal
    cells' centres are 11.3 px away, inside the 36-gon's 11.95 px inradius; the next ring is
    16 px away). Class 0 is likely at the centre only, class 1 on the rest of the block."""
    centre = lambda x, y: (x, y) == (4, 4)  # noqa: E731
    maps, locs = _one_level(
        cat0=lambda x, y: 0.8 if centre(x, y) else 0.2,
        cat1=lambda x, y: 0.1 if centre(x, y) else 0.6,
        ctr=lambda x, y: 0.5,
    )
    loc = torch.tensor([4 * 9 + 4])
    img = torch.zeros(1, dtype=torch.long)
    radii = torch.full((1, 36), 12.0)
    score0 = covered_confidence(maps, locs, img, loc, radii, 2, torch.tensor([0]))
    assert torch.allclose(score0, torch.tensor([(0.8 + 8 * 0.2) / 9 * 0.5]))
    vote = covered_confidence(maps, locs, img, loc, radii, 2)
    assert torch.allclose(vote, torch.tensor([[(0.8 + 8 * 0.2) / 9, (0.1 + 8 * 0.6) / 9]]))
    assert vote.argmax(1).item() == 1  # the covered locations outvote the centre
    # a point-sized polygon covers its own location only: the centre rule
    tiny = covered_confidence(maps, locs, img, loc, torch.zeros(1, 36), 2, torch.tensor([0]))
    assert torch.allclose(tiny, torch.tensor([0.8 * 0.5]))


def test_covered_locations_stay_on_the_map():
    """At the corner cell (0, 0) only the 2 x 2 on-map part of the block counts."""
    maps, locs = _one_level(
        cat0=lambda x, y: 1.0 if (x, y) == (0, 0) else 0.5, cat1=lambda x, y: 0.0,
        ctr=lambda x, y: 1.0,
    )  # fmt: skip
    score = covered_confidence(
        maps, locs, torch.zeros(1, dtype=torch.long), torch.tensor([0]),
        torch.full((1, 36), 12.0), 2, torch.tensor([0]),
    )  # fmt: skip
    assert torch.allclose(score, torch.tensor([(1.0 + 3 * 0.5) / 4]))


def test_cover_window_follows_the_size_ranges():
    assert cover_window([8, 16, 32, 64, 128], LocationGenerator(
        [8, 16, 32, 64, 128], [64, 128, 256, 512]).size_ranges) == 8  # fmt: skip
    assert cover_window([8, 16], LocationGenerator([8, 16], [32]).size_ranges) == 4


def test_candidates_are_thresholded_and_ranked_by_the_fcos_score():
    """Per level, (location, class) pairs whose sqrt(class x centre) passes the threshold, the
    top-k by that score: here 0.849 (location 1, class 0) and 0.794 (1, 1), not the two most
    probable classes (0.9 at location 0, whose centre is 0.1, and 0.8)."""
    cls = [torch.tensor([[0.9, 0.8], [0.6, 0.7]]).logit().reshape(1, 2, 1, 2)]
    ctr = [torch.tensor([0.1, 0.9]).logit().reshape(1, 1, 1, 2)]
    rad = [torch.ones(1, 36, 1, 2)]
    locs = LocationGenerator([8], [])(cls)
    cand = select_candidates(cls, ctr, rad, locs, score_thresh=0.05, topk=2)
    assert cand.location.tolist() == [1, 1] and cand.classes.tolist() == [0, 1]
    assert torch.allclose(cand.cls_prob, torch.tensor([0.8, 0.7]))
    assert torch.allclose(cand.ctr_prob, torch.tensor([0.9, 0.9]))
    # the threshold applies to the score too: only 0.849 and 0.794 pass 0.5
    cand = select_candidates(cls, ctr, rad, locs, score_thresh=0.5, topk=4)
    assert len(cand.location) == 2
    maps = confidence_maps(cls, ctr)
    assert maps[0].shape == (1, 3, 1, 2)
