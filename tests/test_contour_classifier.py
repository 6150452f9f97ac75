"""The contour classifier (``MODEL.POLAR_REFINE.CONTOUR_CLASSIFIER``): its sampler against
``grid_sample``, its training targets and gradients, and how it rescores candidates."""

import torch
import torch.nn.functional as F
from conftest import tiny_cfg, two_image_batch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from polar_refine.modeling.contour_cls import sample_features


def test_sample_features_equals_grid_sample_on_every_level_and_image():
    torch.manual_seed(0)
    feats = [torch.randn(2, 5, 9, 13), torch.randn(2, 5, 5, 7), torch.randn(2, 5, 3, 4)]
    p, k = 40, 6
    level = torch.randint(0, 3, (p,))
    image = torch.randint(0, 2, (p,))
    sizes = torch.tensor([[13, 9], [7, 5], [4, 3]], dtype=torch.float32)[level]  # (W, H)
    pts = torch.rand(p, k, 2) * (sizes[:, None] + 3) - 1.5  # some points off the map
    got = sample_features(feats, level, image, pts)
    for i in range(p):
        f = feats[level[i]][image[i] : image[i] + 1]
        h, w = f.shape[-2:]
        grid = (pts[i] + 0.5) * torch.tensor([2.0 / w, 2.0 / h]) - 1.0
        ref = F.grid_sample(f, grid[None, None], align_corners=False)[0, :, 0].t()  # (K, C)
        torch.testing.assert_close(got[i], ref, atol=1e-5, rtol=1e-5)


def test_trained_on_positives_and_hardest_negatives_with_gradients_to_the_features():
    cfg = tiny_cfg(MODEL__POLAR_REFINE__CONTOUR_CLASSIFIER__ENABLED="True")
    cfg.MODEL.POLAR_REFINE.CONTOUR_CLASSIFIER.NEGATIVES_PER_IMAGE = 7
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    seen = {}
    orig = model._contour_classifier_training

    def spy(*args):
        seen["out"] = orig(*args)
        return seen["out"]

    model._contour_classifier_training = spy
    with EventStorage(0):
        losses = model(two_image_batch())
    logits, target = seen["out"]
    num_classes = cfg.MODEL.POLAR_REFINE.NUM_CLASSES
    assert logits.shape == (target.shape[0], num_classes + 1)
    assert (target == num_classes).sum() == 2 * 7  # k negatives per image
    pos = target[target < num_classes]
    assert pos.numel() > 0 and set(pos.tolist()) == {0, 1, 2}
    expect = F.cross_entropy(logits, target)
    torch.testing.assert_close(losses["loss_contour_cls"], expect)
    losses["loss_contour_cls"].backward()
    assert model.contour_classifier.hidden.weight.grad.abs().sum() > 0
    stem = model.backbone.bottom_up.stem.conv1.weight.grad
    assert stem is not None and stem.abs().sum() > 0  # it reads and trains the shared features


def test_candidates_take_the_classifier_category_and_a_geometric_mean_score():
    cfg = tiny_cfg(
        MODEL__POLAR_REFINE__CONTOUR_CLASSIFIER__ENABLED="True",
        MODEL__POLAR_REFINE__SCORE_THRESH_TEST="0.0",
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = [{"image": two_image_batch()[0]["image"]}]
    with torch.no_grad():
        for layer in (model.head.cls_logits, model.head.ctr_logits):
            layer.weight.zero_()
        model.head.cls_logits.bias.fill_(3.0)  # every location a candidate of every class
        model.head.cls_logits.bias[0] = 4.0  # the dense classifier prefers class 0
        model.head.ctr_logits.bias.fill_(0.0)  # centre probability 0.5 everywhere
        model.contour_classifier.logits.weight.zero_()
        model.contour_classifier.logits.bias.copy_(torch.tensor([0, 0, 0, 0, 5.0, 0, 1.0]))
        out = model(image)[0]["instances"]
    assert len(out) > 0
    assert (out.pred_classes == 4).all()  # the classifier's choice, not the dense one
    # score = sqrt(p * q_4) x centre: q from the bias alone, p = sigmoid(4) for the best
    q = torch.tensor([0, 0, 0, 0, 5.0, 0, 1.0]).softmax(0)[4]
    p = torch.sigmoid(torch.tensor(4.0))
    torch.testing.assert_close(out.scores[0], (p * q).sqrt() * 0.5)
    with torch.no_grad():
        model.contour_classifier = None
        plain = model(image)[0]["instances"]
    assert (plain.pred_classes == 0).all()
