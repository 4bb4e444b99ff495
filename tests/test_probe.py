"""The representation probe (genaug/probe.py): encoder features and the linear / kNN probes."""

import warnings

import numpy as np
import pytest
import torch

from genaug import mae, probe
from genaug.config import MAEConfig

CFG = MAEConfig(preset="micro", patch_size=4)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These models are tiny: a second intra-op thread gains nothing, and on a busy 2-core machine the
    pool's waiting made the training test 26 s instead of 3 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------- probes


def blobs(n, seed, shift=4.0, dim=8):
    """Two well-separated Gaussian classes (labels 0/1, alternating), plus a constant feature."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, dim))
    x[:, 0] += shift * (2 * y - 1)
    x[:, -1] = 3.0  # constant: standardising must not divide by zero
    return x, y


def test_separable_features_are_probed_perfectly_with_consistent_per_image_scores():
    train_x, train_y = blobs(100, 0)
    test_x, test_y = blobs(64, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no convergence (or any other) warning
        result = probe.probe(train_x, train_y, test_x, test_y)
    assert set(result) == {"linear", "knn"}
    for kind, scores in result.items():
        assert scores["balanced_accuracy"] > 0.98 and scores["auroc"] > 0.99, kind
        assert scores["log_loss"].shape == scores["correct"].shape == (64,)
        assert set(np.unique(scores["correct"])) <= {0.0, 1.0}
        # a balanced test set: mean correctness is the accuracy and the balanced accuracy
        assert scores["correct"].mean() == pytest.approx(scores["accuracy"])
        assert scores["correct"].mean() == pytest.approx(scores["balanced_accuracy"])
        assert np.all(scores["log_loss"] >= 0) and np.all(scores["log_loss"] <= -np.log(probe.LOG_LOSS_EPS) + 1e-9)
        assert scores["reason"] is None
    assert result["linear"]["converged"] and result["knn"]["k"] == 20
    # a correct image is one whose true class got the larger probability: log-loss below log 2
    linear = result["linear"]
    assert np.all((linear["log_loss"] < np.log(2)) == (linear["correct"] == 1))


def test_random_labels_give_chance():
    rng = np.random.default_rng(0)
    train_x, test_x = rng.normal(size=(200, 16)), rng.normal(size=(400, 16))
    train_y, test_y = rng.integers(0, 2, 200), rng.integers(0, 2, 400)
    result = probe.probe(train_x, train_y, test_x, test_y)
    for kind, scores in result.items():
        assert 0.4 < scores["balanced_accuracy"] < 0.6, kind
        assert 0.4 < scores["auroc"] < 0.6, kind
    assert result["linear"]["log_loss"].mean() > 0.6  # no better than a coin (log 2 = 0.69)


def test_balanced_accuracy_by_hand_and_integer_labels():
    """kNN with k = 1 on 1-D features: the predictions are known, so the metrics are worked out by hand."""
    train_x = np.array([[1.0], [2.0], [3.0], [-1.0], [-2.0], [-3.0]])
    train_y = [7, 7, 7, 3, 3, 3]  # any integers: classes are the sorted distinct labels
    test_x = np.array([[1.5], [2.5], [-1.5], [0.5], [0.7], [-0.5]])
    test_y = [7, 3, 3, 3, 3, 3]
    # predictions by sign: 7, 7, 3, 7, 7, 3 -> class 7 recall 1/1, class 3 recall 2/5 -> balanced 0.7
    result = probe.probe(train_x, train_y, test_x, test_y, knn_k=1)
    knn = result["knn"]
    assert knn["correct"].tolist() == [1, 0, 1, 0, 0, 1]
    assert knn["balanced_accuracy"] == pytest.approx((1 / 1 + 2 / 5) / 2)
    assert knn["accuracy"] == pytest.approx(3 / 6)
    # vote fractions with k = 1 are 0 or 1: a miss costs the clipped log-loss, a hit nothing
    assert knn["log_loss"] == pytest.approx(np.where(knn["correct"] == 1, 0.0, -np.log(probe.LOG_LOSS_EPS)))
    assert knn["classes"] == [3, 7] and knn["k"] == 1
    # AUROC (positive = 7) from the vote fractions 1 | 1, 0, 1, 1, 0: the 7 outranks two 3s and ties three
    assert knn["auroc"] == pytest.approx((2 + 0.5 * 3) / 5)
    assert result["linear"]["correct"].tolist() == [1, 0, 1, 0, 0, 1]


def test_knn_uses_cosine_similarity():
    """Class 0 lies far out along the axes, class 1 close to the origin on the diagonals: a short vector
    along an axis is nearest (Euclidean) to class 1 but points (cosine) at class 0. The training set is
    symmetric, so standardising scales it and changes no neighbour."""
    train_x = np.array([[10, 0], [-10, 0], [0, 10], [0, -10],
                        [0.7, 0.7], [-0.7, 0.7], [0.7, -0.7], [-0.7, -0.7]], dtype=float)
    train_y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    test_x = np.array([[2.0, 0.0], [0.0, -2.0], [1.0, 1.1]])
    test_y = np.array([0, 0, 1])
    euclidean = np.argmin(((test_x[:, None] - train_x[None]) ** 2).sum(-1), axis=1)
    assert train_y[euclidean].tolist() == [1, 1, 1]  # Euclidean neighbours would say class 1
    knn = probe.probe(train_x, train_y, test_x, test_y, knn_k=1)["knn"]
    assert knn["correct"].tolist() == [1, 1, 1]
    three = probe.probe(train_x, train_y, test_x, test_y, knn_k=3)["knn"]
    # three nearest by angle of (2, 0): (10, 0) at 0 degrees, then two diagonals at 45 -> 1/3 of the votes
    assert three["log_loss"][0] == pytest.approx(-np.log(1 / 3))


def test_three_classes_multinomial():
    rng = np.random.default_rng(0)
    centres = np.array([[4, 0], [-4, 0], [0, 4]], dtype=float)
    train_y, test_y = np.arange(90) % 3, np.arange(30) % 3
    train_x = centres[train_y] + rng.normal(size=(90, 2))
    test_x = centres[test_y] + rng.normal(size=(30, 2))
    result = probe.probe(train_x, train_y, test_x, test_y, knn_k=5)
    for kind, scores in result.items():
        assert scores["balanced_accuracy"] > 0.9 and scores["auroc"] is None, kind


def test_a_test_class_never_trained_on_counts_as_missed():
    train_x, train_y = blobs(40, 0)
    test_x, test_y = blobs(10, 1)
    test_y = test_y.copy()
    test_y[:2] = 5  # a class the probe never saw
    result = probe.probe(train_x, train_y, test_x, test_y)
    for kind, scores in result.items():
        assert scores["unseen_test_classes"] == [5]
        assert scores["correct"][:2].tolist() == [0, 0]
        assert scores["log_loss"][:2] == pytest.approx([-np.log(probe.LOG_LOSS_EPS)] * 2)
        assert scores["auroc"] is None  # three classes in all: no two-class AUROC
        # class 5 is in the balanced accuracy with recall 0
        recalls = [scores["correct"][test_y == c].mean() for c in (0, 1, 5)]
        assert scores["balanced_accuracy"] == pytest.approx(np.mean(recalls))


def test_one_training_class_gives_no_metrics_and_a_reason():
    rng = np.random.default_rng(0)
    result = probe.probe(rng.normal(size=(10, 4)), np.ones(10, dtype=int), rng.normal(size=(6, 4)),
                         np.array([0, 1, 1, 0, 1, 1]))
    for scores in result.values():
        assert scores["balanced_accuracy"] is None and scores["auroc"] is None
        assert "one class" in scores["reason"]
        assert scores["log_loss"].shape == (6,) and np.isnan(scores["log_loss"]).all()


def test_string_labels_and_a_one_class_test_set():
    train_x, y = blobs(40, 0)
    test_x, _ = blobs(10, 1)
    names = np.array(["car", "person"])
    result = probe.probe(train_x, names[y], test_x[::2], np.array(["person"] * 5))
    linear = result["linear"]
    assert linear["auroc"] is None  # one class in the test set: AUROC undefined
    assert linear["balanced_accuracy"] == pytest.approx(linear["correct"].mean())
    assert linear["classes"] == ["car", "person"]


def test_metrics_are_plain_python():
    import json

    train_x, train_y = blobs(40, 0)
    test_x, test_y = blobs(10, 1)
    result = probe.probe(train_x, train_y, test_x, test_y)
    json.dumps({kind: {k: v for k, v in s.items() if k not in ("log_loss", "correct")} for kind, s in result.items()})


# ----------------------------------------------------------------------------------------------- features


def images(n, channels=3, side=16, seed=0):
    return torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def test_features_see_every_patch_and_are_deterministic():
    torch.manual_seed(0)
    model = mae.build(CFG, 16, 3).train()  # the mask ratio is 0.75 and the model in training mode
    batch = images(10)
    normalizer = mae.Normalizer.fit(batch)
    tokens = []
    model.vit.layers[0].register_forward_pre_hook(lambda m, args: tokens.append(args[0].shape[1]))
    features = probe.encoder_features(model, normalizer, batch, "cpu", batch_size=4)
    assert features.shape == (10, 32) and features.dtype == torch.float32
    assert tokens == [1 + 16] * 3  # every patch of 16 and the class token, in each of 3 batches
    assert model.training and model.config.mask_ratio == 0.75  # restored
    # the same images give the same features: whatever the batch size, order or global random state
    torch.manual_seed(123)
    again = probe.encoder_features(model, normalizer, batch, "cpu", batch_size=10)
    assert torch.allclose(features, again, atol=1e-5)
    reordered = probe.encoder_features(model, normalizer, batch.flip(0), "cpu", batch_size=3)
    assert torch.allclose(features, reordered.flip(0), atol=1e-5)
    # by hand: the encoder on every patch with no masking, mean of the patch tokens before the final LayerNorm
    with torch.no_grad():
        model.eval()
        embeddings = model.vit.embeddings
        x = embeddings.patch_embeddings(normalizer.to_model(batch.float() / 255))
        x = x + embeddings.position_embeddings[:, 1:]
        cls = (embeddings.cls_token + embeddings.position_embeddings[:, :1]).expand(len(x), -1, -1)
        hidden = torch.cat([cls, x], dim=1)
        for layer in model.vit.layers:
            hidden = layer(hidden, None)
        expected = hidden[:, 1:].mean(dim=1)
    assert torch.allclose(features, expected, atol=1e-5)
    assert not torch.allclose(features, model.vit.layernorm(hidden)[:, 1:].mean(dim=1), atol=1e-2)
    assert not model.vit.layernorm._forward_hooks  # the hook is gone


def test_a_saved_mae_loads_with_its_normalizer(tmp_path):
    torch.manual_seed(0)
    model = mae.build(CFG, 16, 1)
    batch = images(6, channels=1)
    normalizer = mae.Normalizer.fit(batch)
    model.save_pretrained(tmp_path / "model")
    normalizer.save(tmp_path / "model", 16)
    loaded, loaded_normalizer = probe.load_encoder(tmp_path, "cpu")  # the stage folder or its model/
    assert not loaded.training and torch.allclose(loaded_normalizer.mean, normalizer.mean)
    assert torch.allclose(probe.encoder_features(loaded, loaded_normalizer, batch, "cpu"),
                          probe.encoder_features(model, normalizer, batch, "cpu"), atol=1e-6)


def test_random_encoder_is_seeded_and_leaves_the_global_generator_alone():
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    a = probe.random_encoder(CFG, 16, 3, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = probe.random_encoder(CFG, 16, 3, seed=1)
    c = probe.random_encoder(CFG, 16, 3, seed=2)
    state = lambda m: torch.cat([p.flatten() for p in m.vit.parameters()])
    assert torch.equal(state(a), state(b)) and not torch.equal(state(a), state(c))
    assert a.config.hidden_size == 32 and a.config.image_size == 16
    # the positions are the MAE paper's sin-cos ones, not transformers 5's zeros
    assert a.vit.embeddings.position_embeddings.abs().sum() > 0
    assert probe.pretrained_encoder(CFG) is None  # scratch: no pretrained floor


def test_pretrained_floors(tmp_path):
    from tests.test_mae import save_tiny_pretrained

    stored = save_tiny_pretrained(tmp_path / "pre", image_size=16)
    cfg = MAEConfig(init=str(tmp_path / "pre"))
    before = probe.pretrained_encoder(cfg)
    assert all(torch.equal(p, q) for p, q in zip(before.vit.parameters(), stored.vit.parameters()))
    at_32 = probe.pretrained_encoder(cfg, 32, 3)  # the model training starts from, positions resized
    batch = images(4, side=32)
    normalizer = mae.Normalizer.from_pretrained(cfg.init)
    # the native-size model runs with the encoder's own 2-D interpolation: the same features
    assert torch.allclose(probe.encoder_features(before, normalizer, batch, "cpu"),
                          probe.encoder_features(at_32, normalizer, batch, "cpu"), atol=1e-4)
    fresh = probe.random_encoder(cfg, 32, 3, seed=0)  # its architecture at the study's size, new weights
    assert fresh.config.hidden_size == stored.config.hidden_size and fresh.config.image_size == 32
    assert probe.encoder_features(fresh, normalizer, batch, "cpu").shape == (4, stored.config.hidden_size)


# ------------------------------------------------------------------------------- the known answer: training


def shapes(n, seed, side=16):
    """A filled 7 x 7 square (label 1) or a disc of about the same area (label 0) at a random place, on a
    background of random brightness, with pixel noise. uint8 (n, 1, side, side) and labels (n,)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(side).float(), torch.arange(side).float(), indexing="ij")
    labels = torch.arange(n) % 2
    out = torch.empty(n, 1, side, side)
    for i in range(n):
        background = 0.2 + 0.2 * torch.rand(1, generator=g).item()
        cy, cx = (torch.rand(2, generator=g) * (side - 6) + 3).tolist()
        if labels[i]:
            shape = ((yy - cy).abs() <= 3) & ((xx - cx).abs() <= 3)
        else:
            shape = (yy - cy) ** 2 + (xx - cx) ** 2 <= 3.9 ** 2
        out[i, 0] = background + 0.5 * shape.float() + 0.05 * torch.randn(side, side, generator=g)
    return (out.clamp(0, 1) * 255).round().to(torch.uint8), labels.numpy()


def test_a_trained_mae_beats_its_random_init_floor(tmp_path):
    """Square or disc needs the image's content: after 150 steps a micro MAE's linear probe tells them
    apart far better than the same architecture at random init (0.86-0.93 vs 0.57-0.61 balanced accuracy
    over three seeds when this was written). Features with the masking left on (0.50-0.57), from the
    embeddings (0.57-0.61) or after the final LayerNorm (0.77-0.78 vs a floor of 0.67-0.79) fail it."""
    from genaug.config import RuntimeConfig
    from genaug.engine import Trainer

    train_images, train_y = shapes(200, 100)
    test_images, test_y = shapes(200, 200)
    cfg = MAEConfig(preset="micro", patch_size=4, steps=150, batch_size=32, warmup_steps=10, lr=5e-3)
    normalizer = mae.Normalizer.fit(train_images)
    trainer = Trainer(RuntimeConfig(device="cpu"), cfg.steps, tmp_path / "log.jsonl", "mae")
    trained, _ = mae.train(cfg, train_images, normalizer, seed=0, trainer=trainer)
    scores = {}
    for name, model in (("trained", trained), ("random", probe.random_encoder(cfg, 16, 1, seed=0))):
        features = [probe.encoder_features(model, normalizer, x, "cpu").numpy() for x in (train_images, test_images)]
        scores[name] = probe.probe(features[0], train_y, features[1], test_y)["linear"]["balanced_accuracy"]
    assert scores["trained"] > 0.8 and scores["trained"] > scores["random"] + 0.15, scores
