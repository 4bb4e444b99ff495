"""Probes of a frozen MAE encoder: are the features better, not only the reconstructions?

Features (`encoder_features`): the encoder (`model.vit`) sees every patch, in eval mode, in float32,
without gradients; an image's feature is the mean over its patch tokens (the class token left out) of
the last transformer block's output, taken BEFORE the encoder's final LayerNorm (`model.vit.layernorm`;
`last_hidden_state` is after it). That is the MAE paper's global-pool recipe (its models_vit.py drops
the final norm when it pools and normalises the pooled vector instead; its linear probe puts a
BatchNorm without affine before the classifier, which is what the probes' standardisation is). It
matters: on a synthetic shape task (tests/test_probe.py) the mean of the post-norm tokens of a micro MAE
trained 150 steps probed no better than a random-init encoder's (0.77 vs 0.73 balanced accuracy over
three seeds), the pre-norm mean clearly better (0.88 vs 0.59). ViTMAE masks inside its embeddings, so
for the forward pass the encoder's mask ratio is set to 0 and it is given the identity order as its
`noise`: no patch is dropped, nothing is shuffled, and torch's global random state is not touched.

Encoders: a trained MAE as the study saved it (`load_encoder`), and the floors: a randomly initialised
encoder of the same architecture (`random_encoder`) and, when `mae.init` names pretrained weights, those
weights before any training (`pretrained_encoder`). Every encoder is used with the normalisation its MAE
was trained with (`mae.normalizer_for(cfg, real training images)`, saved beside a trained MAE).

Probes (`probe`): trained on the real training images' features, scored on the test images'. Both see
the features standardised with the training set's per-dimension mean and standard deviation:
- linear: scikit-learn's LogisticRegression (L2, C = probe.logistic_c, lbfgs; multinomial for more
  than two classes; classes weighted inversely to their training frequency, as balanced accuracy
  counts them), its probabilities the model's;
- kNN: cosine similarity between standardised features (so the training mean is removed before the
  angles are compared), k = min(probe.knn_k, training images); a class's probability is the fraction
  of the k neighbours that carry it, and a tied vote goes to the class whose tied neighbours are the
  more similar in sum.
Metrics: balanced accuracy (mean over the classes present in the test labels of their recall), AUROC
for a two-class task, and per test image the log-loss -log p(true class) (p clipped at LOG_LOSS_EPS,
so a confident miss costs at most -log(1e-4) = 9.21 nats) and 0/1 correctness: the per-image scores
`analysis.stats.compare` pairs across conditions.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from genaug.config import MAEConfig
from genaug.errors import UserError

LOG_LOSS_EPS = 1e-4  # per-image log-loss is -log(max(p(true class), this)): at most 9.21 nats
MAX_ITER = 5000  # lbfgs iterations; the quickstart's probes converge in well under 100
KINDS = ("linear", "knn")

# ------------------------------------------------------------------------------------------------ encoders


def load_encoder(mae_dir: Path, device: str):
    """A trained MAE saved by the study -> (ViTMAEForPreTraining in eval mode on `device`, its Normalizer).

    `mae_dir` is the folder `save_pretrained` wrote (config.json, model.safetensors and the
    preprocessor_config.json of its Normalizer), or the mae stage's folder holding it as `model/`.
    Safetensors only, never the network; loaded in float32. Unreadable weights or normalisation: a
    one-line UserError that says to retrain.
    """
    from safetensors import SafetensorError
    from transformers import ViTMAEForPreTraining
    from transformers.utils import logging

    from genaug.mae import Normalizer

    folder = Path(mae_dir)
    if not (folder / "config.json").is_file() and (folder / "model" / "config.json").is_file():
        folder = folder / "model"
    logging.disable_progress_bar()
    try:
        model = ViTMAEForPreTraining.from_pretrained(folder, use_safetensors=True, local_files_only=True,
                                                     dtype=torch.float32)
    except (OSError, ValueError, SafetensorError) as e:
        raise UserError(f"{folder}: the MAE's weights do not load ({e.__class__.__name__}); delete its stage "
                        "folder and run again to retrain it") from None
    try:
        normalizer = Normalizer.load(folder)
    except (OSError, ValueError) as e:
        raise UserError(f"{folder}: the MAE's normalisation (preprocessor_config.json) does not load "
                        f"({e.__class__.__name__}); delete its stage folder and run again to retrain it") from None
    return model.to(device).eval(), normalizer


def random_encoder(cfg: MAEConfig, image_size: int, channels: int, seed: int):
    """The random-init floor: an MAE of the architecture `cfg` trains, freshly initialised -> ViTMAEForPreTraining.

    Scratch: `mae.build` (the preset, sin-cos positions, patch projection and weights initialised as
    for training). Pretrained `cfg.init`: its config.json's architecture for (channels, image_size,
    image_size) inputs, initialised as a scratch model is, none of its weights. Seeded by `seed` alone;
    torch's global random state is left as it was. On the CPU, in eval mode.
    """
    from genaug import mae

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if cfg.init == mae.SCRATCH:
            model = mae.build(cfg, image_size, channels)
        else:
            from transformers import ViTMAEConfig, ViTMAEForPreTraining

            mae.check_init(cfg, image_size, channels)
            config = ViTMAEConfig.from_pretrained(mae.locate(cfg.init), local_files_only=True)
            config.image_size, config.num_channels = image_size, channels
            config.mask_ratio, config.norm_pix_loss = cfg.mask_ratio, cfg.norm_pix_loss
            config._attn_implementation = "sdpa"
            model = ViTMAEForPreTraining(config)
            mae.restore_sincos_init(model)
    return model.eval()


def pretrained_encoder(cfg: MAEConfig, image_size: int | None = None, channels: int | None = None):
    """The pretrained floor: `cfg.init`'s weights before any training -> ViTMAEForPreTraining, or None for scratch.

    Loaded through `mae.locate` (this machine only, safetensors only) by `mae.build`. With `image_size`
    it is exactly the model training starts from (position embeddings resized once, in 2-D, to that
    size); without, the model of its native size, which `encoder_features` runs with the encoder's own
    2-D interpolation of the positions (the same bicubic resize). On the CPU, in eval mode.
    """
    from genaug import mae

    if cfg.init == mae.SCRATCH:
        return None
    config = mae.pretrained_config(cfg.init)
    native = config.get("image_size", 224)
    native = native[0] if isinstance(native, (list, tuple)) else native
    return mae.build(cfg, image_size or int(native), channels or int(config.get("num_channels", 3))).eval()


@contextlib.contextmanager
def _unmasked(embeddings):
    """ViTMAE's embeddings with mask ratio 0 for the duration (the config object is shared: restored after)."""
    config = embeddings.config
    ratio = config.mask_ratio
    config.mask_ratio = 0.0
    try:
        yield
    finally:
        config.mask_ratio = ratio


@torch.no_grad()
def encoder_features(model, normalizer, images: torch.Tensor, device: str, batch_size: int = 0) -> torch.Tensor:
    """uint8 (N, C, S, S) images -> (N, D) float32 features on the CPU; D = the encoder's hidden size.

    `model`: a ViTMAEForPreTraining (its encoder `model.vit` is used) or a ViTMAEModel; it is moved to
    `device` (in place, as `nn.Module.to` does) and run in eval mode, its previous mode restored after.
    `normalizer`: the Normalizer its MAE was trained with. Each image's feature is the mean over its
    L = (S / patch)**2 patch tokens (not the class token) of the last block's output, the input of the
    encoder's final LayerNorm (the module docstring says why before it). No patch is dropped (the
    encoder's mask ratio is 0 for the call, and 1 + L tokens are checked to come out) and nothing is
    shuffled, so the features are a pure function of the image and the weights: the same for any batch
    size, order, or state of torch's random generator (to float rounding across batch sizes). Autocast
    is off: float32 throughout. `batch_size` images per forward pass; 0 = 64 on the CPU, 512 on CUDA.
    """
    from genaug.data.images import to_unit

    encoder = getattr(model, "vit", model)
    dtype = next(encoder.parameters()).dtype
    if dtype != torch.float32:
        raise ValueError(f"encoder_features computes in float32; the model's weights are {dtype}: load it in "
                         "float32")
    if images.ndim != 4:
        raise ValueError(f"encoder_features takes (N, C, S, S) images; got shape {tuple(images.shape)}")
    device = torch.device(device)
    batch_size = batch_size or (512 if device.type == "cuda" else 64)
    side, patch = images.shape[-1], encoder.config.patch_size
    native = encoder.config.image_size
    native = native[0] if isinstance(native, (list, tuple)) else native
    length = (side // patch) ** 2
    was_training = model.training
    model.to(device).eval()
    out, seen = [], []
    # the final LayerNorm's input: the last block's output, (B, 1 + L, D)
    hook = encoder.layernorm.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    try:
        with _unmasked(encoder.embeddings), torch.autocast(device.type, enabled=False):
            for start in range(0, len(images), batch_size):
                batch = images[start:start + batch_size]
                pixel_values = normalizer.to_model(to_unit(batch).to(device))
                order = torch.arange(length, device=device, dtype=torch.float32).expand(len(batch), length)
                encoder(pixel_values=pixel_values, noise=order, interpolate_pos_encoding=side != native)
                hidden = seen.pop()
                if hidden.shape[1] != length + 1:
                    raise RuntimeError(f"the encoder returned {hidden.shape[1]} tokens for {length} patches + the "
                                       "class token: patches were dropped")
                out.append(hidden[:, 1:].float().mean(dim=1).cpu())
    finally:
        hook.remove()
        model.train(was_training)
    if not out:
        return torch.zeros(0, encoder.config.hidden_size)
    return torch.cat(out)


# -------------------------------------------------------------------------------------------------- probes


def _empty(n_test: int, reason: str) -> dict:
    nan = np.full(n_test, np.nan)
    return {"balanced_accuracy": None, "accuracy": None, "auroc": None, "log_loss": nan, "correct": nan.copy(),
            "reason": reason}


def _py(values) -> list:
    return [v.item() if hasattr(v, "item") else v for v in values]


def _scores(proba: np.ndarray, classes: np.ndarray, test_y: np.ndarray, binary: bool) -> dict:
    """(n_test, K) probabilities over the training `classes` (sorted), and the true labels -> the metrics."""
    index = {c: i for i, c in enumerate(classes.tolist())}
    true_index = np.array([index.get(y, -1) for y in test_y.tolist()])
    p_true = np.where(true_index >= 0, proba[np.arange(len(test_y)), np.maximum(true_index, 0)], 0.0)
    out = {"log_loss": -np.log(np.clip(p_true, LOG_LOSS_EPS, 1.0))}
    if binary:
        from sklearn.metrics import roc_auc_score

        out["auroc"] = float(roc_auc_score(test_y == classes[1], proba[:, 1]))
    else:
        out["auroc"] = None
    return out


def _finish(predicted: np.ndarray, proba: np.ndarray, classes: np.ndarray, test_y: np.ndarray, binary: bool,
            extra: dict) -> dict:
    correct = (predicted == test_y).astype(np.float64)
    recalls = [correct[test_y == c].mean() for c in np.unique(test_y)]
    scores = _scores(proba, classes, test_y, binary)
    return {"balanced_accuracy": float(np.mean(recalls)), "accuracy": float(correct.mean()), "auroc": scores["auroc"],
            "log_loss": scores["log_loss"], "correct": correct, "reason": None, **extra}


def _knn(train_z: np.ndarray, train_y: np.ndarray, test_z: np.ndarray, classes: np.ndarray, k: int):
    """Cosine kNN: -> (predicted labels (n_test,), vote fractions (n_test, K) over `classes`)."""
    def unit(z):
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        return z / np.where(norm > 0, norm, 1.0)

    similarity = unit(test_z) @ unit(train_z).T  # (n_test, n_train)
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]  # ties: the earlier training image
    members = np.searchsorted(classes, train_y)[nearest]  # (n_test, k) class index of each neighbour
    rows = np.arange(len(test_z))[:, None]
    votes = np.zeros((len(test_z), len(classes)))
    summed = np.zeros_like(votes)
    np.add.at(votes, (rows, members), 1.0)
    np.add.at(summed, (rows, members), similarity[rows, nearest])
    # |summed| <= votes <= k, so summed / (2k + 1) breaks ties between equal vote counts and nothing else
    predicted = classes[np.argmax(votes + summed / (2 * k + 1), axis=1)]
    return predicted, votes / k


def probe(train_x, train_y, test_x, test_y, knn_k: int = 20, logistic_c: float = 1.0, seed: int = 0) -> dict:
    """Linear and kNN probes: features (N_train, D) with labels (N_train,), scored on (N_test, D), (N_test,).

    Labels: any integers (or strings) of one kind; classes are the sorted distinct training labels.
    Returns {"linear": scores, "knn": scores}, each scores a dict of
        balanced_accuracy  float: mean over the classes present in test_y of their recall
        accuracy           float: plain accuracy
        auroc              float for a two-class task (both classes in training and in test; positive =
                           the larger label, scored by its probability / vote fraction), else None
        log_loss           (N_test,) float64 numpy: -log max(p(true class), LOG_LOSS_EPS)
        correct            (N_test,) float64 numpy: 1.0 where the predicted class is the true one, else 0.0
        reason             None, or why the metrics are None
        classes            the training classes (list); unseen_test_classes: test labels never trained on
    and for "linear" also converged (bool) and n_iter (lbfgs iterations), and for "knn" k.
    The scalars are plain Python (JSON-ready). A test class absent from training cannot be predicted:
    its images are wrong (correct 0, log-loss at the clip, -log LOG_LOSS_EPS), it still counts in the
    balanced accuracy (recall 0), and there is no AUROC unless the task is two-class on both sides.
    Fewer than two classes in training, or no test image: every metric None with the reason, the
    per-image arrays NaN (length N_test), nothing raised. The logistic regression does not warn if lbfgs
    stops at MAX_ITER: `converged` says so.
    """
    train_x, test_x = np.asarray(train_x, dtype=np.float64), np.asarray(test_x, dtype=np.float64)
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"probe needs (N, D) features of one width; got {train_x.shape} and {test_x.shape}")
    if train_y.shape != (len(train_x),) or test_y.shape != (len(test_x),):
        raise ValueError(f"probe needs one label per image; got labels {train_y.shape} for {len(train_x)} training "
                         f"and {test_y.shape} for {len(test_x)} test images")
    classes = np.unique(train_y)
    unseen = _py(sorted(set(test_y.tolist()) - set(classes.tolist())))
    common = {"classes": _py(classes), "unseen_test_classes": unseen}
    if len(classes) < 2:
        reason = (f"one class ({_py(classes)[0]!r}) in the probe's training labels" if len(classes)
                  else "no training images")
        return {kind: {**_empty(len(test_y), reason), **common} for kind in KINDS}
    if not len(test_y):
        return {kind: {**_empty(0, "no test images"), **common} for kind in KINDS}
    # two-class task on both sides: AUROC defined
    binary = len(classes) == 2 and not unseen and len(np.unique(test_y)) == 2

    mean, std = train_x.mean(axis=0), train_x.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)  # a constant feature stays 0 (as StandardScaler does)
    train_z, test_z = (train_x - mean) / std, (test_x - mean) / std

    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    # One BLAS thread: these problems are tiny (100 x 128 on the quickstart), and a multi-threaded BLAS
    # made lbfgs 15x slower on a busy 2-core machine (0.2 s instead of 13 ms per fit).
    with threadpool_limits(limits=1, user_api="blas"):
        # balanced class weights: the metric is balanced accuracy, and labels are often skewed (the
        # quickstart's "person" is 9 % negative), where an unweighted fit predicts the majority class
        logistic = LogisticRegression(C=logistic_c, solver="lbfgs", max_iter=MAX_ITER, random_state=seed,
                                      class_weight="balanced")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # reported as `converged`
            logistic.fit(train_z, train_y)
        n_iter = int(np.max(logistic.n_iter_))
        proba = logistic.predict_proba(test_z)  # columns: logistic.classes_ == classes
        linear = _finish(logistic.classes_[np.argmax(proba, axis=1)], proba, classes, test_y, binary,
                         {**common, "converged": n_iter < MAX_ITER, "n_iter": n_iter})
        k = min(knn_k, len(train_z))
        predicted, votes = _knn(train_z, train_y, test_z, classes, k)
        knn = _finish(predicted, votes, classes, test_y, binary, {**common, "k": k})
    return {"linear": linear, "knn": knn}
