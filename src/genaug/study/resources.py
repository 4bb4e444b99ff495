"""What a stage will need before it starts: disk space (refused with the numbers when short) and, when
CUDA runs out of memory anyway, which batch size to lower."""

from __future__ import annotations

import shutil
import weakref
from pathlib import Path

import torch

from genaug.config import Config
from genaug.generators.registry import GENERATORS, SYNTHETIC_STAGES, TRANSLATORS
from genaug.errors import UserError

MB = 1 << 20
GB = 1 << 30
HEADROOM = 64 * MB  # logs, manifests, figures, and what the estimate leaves out

# the config keys whose batch sizes decide a stage's memory
BATCH_KEYS = {"mae": ["mae.batch_size"], "eval": ["eval.batch_size"], "chain": ["ddpm.sample_batch_size"],
              **{name: list(spec.batch_keys) for name, spec in GENERATORS.items()}}


_counted: dict[tuple, int] = {}


def parameter_count(cfg: Config, stage: str, channels: int) -> int:
    """Parameters of the networks a stage trains, counted on the meta device (nothing allocated); counted
    once per architecture, since a study has many runs of each."""
    section = getattr(cfg, stage, None)
    key = (stage, channels, cfg.data.image_size, section.model_dump_json() if section is not None else "")
    if key not in _counted:
        _counted[key] = _count(cfg, stage, channels)
    return _counted[key]


def _count(cfg: Config, stage: str, channels: int) -> int:
    size = cfg.data.image_size
    with torch.device("meta"):
        if stage == "mae":
            from genaug import mae

            if cfg.mae.init != mae.SCRATCH:  # pretrained: what its weights file holds
                weights = sorted(Path(mae.locate(cfg.mae.init)).glob("*.safetensors"))
                return sum(p.stat().st_size for p in weights) // 4
            nets = [mae.build(cfg.mae, size, channels)]
        elif stage == "ddpm":
            from genaug.generators import ddpm

            nets = [ddpm.build_unet(cfg.ddpm, cfg.ddpm.image_size or size, channels)]
        elif stage in TRANSLATORS and stage != "vit_translator":
            from importlib import import_module

            nets = list(import_module(f"genaug.generators.{stage}").build(getattr(cfg, stage), 3, channels).values())
        else:
            return 0
    return sum(p.numel() for net in nets for p in net.parameters())


def disk_need(cfg: Config, stage: str, params: dict, images: int) -> int:
    """Bytes a stage will write, roughly: its weights (fp32) once for the saved model (twice for the
    DDPM: EMA and raw) plus its checkpoints (weights, optimiser moments and EMA: 4x the weights, times
    runtime.checkpoints_total_limit), its images as PNG (at most raw size), and headroom."""
    channels = 1 if params.get("modality") == "thermal" and cfg.data.thermal_channels == 1 else 3
    weights = 4 * parameter_count(cfg, stage, channels)
    saved = weights * (GENERATORS[stage].saved_copies if stage in GENERATORS else 1)
    checkpoints = 4 * weights * cfg.runtime.checkpoints_total_limit if cfg.runtime.checkpoint_every else 0
    pixels = images * 3 * cfg.data.image_size**2
    return saved + checkpoints + pixels + HEADROOM


def check_disk(root: Path, label: str, need: int) -> None:
    free = shutil.disk_usage(root).free
    if free < need:
        raise UserError(f"disk short for {label}: it needs about {need / MB:.0f} MB and {root} has {free / MB:.0f} MB "
                        "free; free some space or give --out a run directory on a larger disk")


def out_of_memory(cfg: Config, label: str, stage: str) -> UserError:
    """The one-line answer to a CUDA out-of-memory error in a stage: the batch size that failed."""
    settings = []
    for key in BATCH_KEYS.get(stage, []):
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        settings.append(f"{key} = {value}" + (f" (--set {key}={max(1, value // 2)})" if value else " (auto)"))
    which = " or ".join(settings) or "the stage's batch size"
    return UserError(f"{label}: CUDA ran out of memory at {which}; lower it or use a larger GPU "
                     "(completed stages are kept)")


# ----------------------------------------------------------------------------------------------- memory
#
# A CPU stage that does not fit in memory is refused before it starts, with the keys that bring it down,
# rather than killed by the kernel's OOM killer halfway (a terminal showing only "Killed"). The estimate
# replays the stage's networks on the meta device (shapes only: nothing allocated, nothing computed,
# a tenth of a second each) under a dispatch mode that keeps the running total of every tensor alive:
# one training step's forward and backward, or one no-grad pass for sampling and evaluation. That peak
# is the activations the real step holds when every tensor is freed as soon as it can be; to it come the
# weights, their gradients and the optimiser's moments (and the DDPM's EMA), and the stage's images.
# It is fp32 throughout, so a step trained in bf16 (the DDPM on CPUs with bf16 arithmetic) needs less
# than the estimate: the estimate errs on the safe side. Validated against measured peak RSS growth of
# real steps (issue 16: within 0.5-2x of it, above it where the activations dominate).

MEMORY_KEYS = {  # what brings a stage's memory down, beside its batch sizes
    "ddpm": ["ddpm.image_size", "ddpm.attention_levels"],
    "mae": ["data.image_size", "mae.patch_size"],
    "cyclegan": ["data.image_size", "cyclegan.ngf"],
    "pix2pix": ["data.image_size", "pix2pix.ngf"],
    "vit_translator": ["data.image_size", "vit_translator.patch_size"],
    "chain": ["data.image_size"], "eval": ["eval.batch_size", "data.image_size"], "split": ["data.image_size"],
}

# The traced peak assumes every tensor is freed the moment it can be, in fp32. Measured real steps grew by
# up to 1.25x that (bf16 autocast keeps cast copies beside the fp32 tensors; the allocator keeps slack):
# the factor keeps the estimate on the safe side. OVERHEAD: oneDNN's primitive caches, thread scratch,
# accelerate and the libraries' first-call state, which measured 50-100 MB in the smallest stages.
ACTIVATIONS = 1.5
OVERHEAD = 128 * MB

_traced: dict[tuple, int] = {}


def memory_available() -> int | None:
    """Bytes this process may still take: /proc/meminfo's MemAvailable, capped by the cgroup's limit less its
    usage (v2 memory.max, or v1 memory.limit_in_bytes) where there is one; None off Linux."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in meminfo.splitlines() if ":" in line)
    if "MemAvailable" not in fields:
        return None
    available = int(fields["MemAvailable"].split()[0]) * 1024
    for limit, usage in _cgroup_files():
        try:
            cap, used = limit.read_text().strip(), usage.read_text().strip()
        except OSError:
            continue
        if cap.isdigit() and used.isdigit():
            available = min(available, max(0, int(cap) - int(used)))
    return available


def _cgroup_files() -> list[tuple[Path, Path]]:
    """(limit, usage) files of this process's memory cgroup, v2 and v1, its own folder first."""
    root = Path("/sys/fs/cgroup")
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            found.append((root / path.lstrip("/") / "memory.max", root / path.lstrip("/") / "memory.current"))
        elif "memory" in controllers.split(","):  # v1
            folder = root / "memory" / path.lstrip("/")
            found.append((folder / "memory.limit_in_bytes", folder / "memory.usage_in_bytes"))
    found += [(root / "memory.max", root / "memory.current"),
              (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes")]
    return [(limit, usage) for limit, usage in found if limit.is_file() and usage.is_file()]


def memory_need(cfg: Config, stage: str, params: dict) -> int:
    """Bytes a stage's process grows by on the CPU, roughly: the peak of one training step (activations,
    traced on the meta device at the configured batch and size) plus the weights, gradients, optimiser
    moments (and the DDPM's EMA) it keeps, and its images; for the DDPM also its sampling batch, for the
    chain its translation batch, for eval its batch, whichever is larger. Traced once per architecture."""
    channels = 1 if params.get("modality") == "thermal" and cfg.data.thermal_channels == 1 else 3
    section = getattr(cfg, stage, None)
    key = (stage, channels, cfg.data.image_size, cfg.eval.batch_size, params.get("generator", ""),
           section.model_dump_json() if section is not None else "",
           cfg.ddpm.model_dump_json() if stage == "chain" else "",
           cfg.mae.model_dump_json() if stage == "eval" else "")
    if key not in _traced:
        _traced[key] = int(_model_need(cfg, stage, channels, params))
    return _traced[key] + _data_need(cfg, stage) + OVERHEAD


def _data_need(cfg: Config, stage: str) -> int:
    """The stage's images: the split it loads (every set, both modalities), and the synthetic set a
    generator makes or an MAE condition adds (as uint8, and once as fp32 where it is scored or resized)."""
    d = cfg.data
    frames = (d.n_pool + d.n_train + d.n_test) * (3 + d.thermal_channels) * d.image_size**2
    synthetic = cfg.study.n_synthetic * 3 * d.image_size**2
    if stage in SYNTHETIC_STAGES:
        return frames + 5 * synthetic
    if stage == "mae":
        return frames + 2 * synthetic
    return frames


def _model_need(cfg: Config, stage: str, channels: int, params: dict) -> int:
    try:
        return _trace_stage(cfg, stage, channels, params)
    except UserError:
        raise
    except Exception:  # an architecture the meta device cannot replay: the stage's own checks will speak
        return 0


def _trace_stage(cfg: Config, stage: str, channels: int, params: dict) -> int:
    size = cfg.data.image_size
    if stage == "ddpm":
        weights, train, sample = ddpm_peaks(cfg)
        # weights, gradients, AdamW's two moments, the EMA; while sampling the raw and EMA models and the
        # loaded pipeline stay alive
        return weights * (5 if cfg.ddpm.ema else 4) + ACTIVATIONS * max(train, sample)
    if stage == "mae":
        model = _mae_on_meta(cfg, size, channels)
        pixels = torch.empty(cfg.mae.batch_size, channels, size, size, device="meta")
        return 4 * _bytes(model) + ACTIVATIONS * live_peak(model, {"pixel_values": pixels}, lambda out: out.loss)
    if stage == "eval":
        model = _mae_on_meta(cfg, size, channels)
        batch = cfg.eval.batch_size or 64
        return _bytes(model) + ACTIVATIONS * live_peak(
            model, {"pixel_values": torch.empty(batch, channels, size, size, device="meta")})
    if stage in TRANSLATORS:
        thermal = cfg.data.thermal_channels
        nets = _translator_on_meta(cfg, stage, 3, thermal, size)
        batch = getattr(cfg, stage).batch_size
        total = sum(4 * _bytes(net) for net in nets.values())
        for name, net in nets.items():
            # a CycleGAN step runs each generator three times (translation, cycle, identity) and each
            # discriminator twice; pix2pix its discriminator twice
            uses = 3 if name.startswith("netG") and stage == "cyclegan" else 2 if name.startswith("netD") else 1
            inputs = _image_inputs(net, batch, size)
            total += uses * ACTIVATIONS * live_peak(net, inputs, lambda out: (out[0] if isinstance(out, tuple) else out).float().mean())
        return total
    if stage == "chain":
        translator = params.get("generator", "ddpm>cyclegan").rpartition(">")[2]
        nets = _translator_on_meta(cfg, translator, 3, cfg.data.thermal_channels, size)
        net = nets.get("netG_A", nets.get("netG"))
        return _bytes(net) + ACTIVATIONS * live_peak(net, _image_inputs(net, 64, size))  # networks.translate's batch
    return 0


def ddpm_peaks(cfg: Config) -> tuple[int, int, int]:
    """(weights, training step's activations, sampling batch's activations) of the DDPM UNet, in bytes."""
    from genaug.generators import ddpm

    side = cfg.ddpm.image_size or cfg.data.image_size
    with torch.device("meta"):
        unet = ddpm.build_unet(cfg.ddpm, side, 3)
    ddpm.plain_attention(unet)  # what the CPU runs: the attention score matrices are materialised
    train = live_peak(unet, _unet_inputs(cfg.ddpm.batch_size, side), lambda out: out.sample.float().square().mean())
    return _bytes(unet), train, live_peak(unet, _unet_inputs(cfg.ddpm.sample_batch_size, side))


def _bytes(net: torch.nn.Module) -> int:
    return sum(p.numel() * 4 for p in net.parameters())


def _unet_inputs(batch: int, side: int) -> tuple:
    return (torch.empty(batch, 3, side, side, device="meta"),
            torch.zeros(batch, dtype=torch.long, device="meta"))


def _image_inputs(net: torch.nn.Module, batch: int, size: int) -> tuple:
    first = next(m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    channels = first.in_channels if isinstance(first, torch.nn.Conv2d) else getattr(net, "encoder").config.num_channels
    return (torch.empty(batch, channels, size, size, device="meta"),)


def _mae_on_meta(cfg: Config, size: int, channels: int):
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    from genaug import mae

    if cfg.mae.init == mae.SCRATCH:
        config = ViTMAEConfig(image_size=size, patch_size=cfg.mae.patch_size, num_channels=channels,
                              mask_ratio=cfg.mae.mask_ratio, norm_pix_loss=cfg.mae.norm_pix_loss,
                              attn_implementation="sdpa", **mae.PRESETS[cfg.mae.preset])
    else:
        stored = {k: v for k, v in mae.pretrained_config(cfg.mae.init).items() if not k.startswith("_")}
        config = ViTMAEConfig(**{**stored, "image_size": size, "num_channels": stored.get("num_channels", channels),
                                 "mask_ratio": cfg.mae.mask_ratio, "attn_implementation": "sdpa"})
    with torch.device("meta"):
        return ViTMAEForPreTraining(config)


def _translator_on_meta(cfg: Config, stage: str, channels_a: int, channels_b: int, size: int) -> dict:
    from importlib import import_module

    module = import_module(f"genaug.generators.{stage}")
    with torch.device("meta"):
        if stage != "vit_translator":
            return module.build(getattr(cfg, stage), channels_a, channels_b)
        vit = cfg.vit_translator
        if vit.init == "scratch" or (vit.init == "auto" and not module._local_checkpoint(module.AUTO_CHECKPOINT)):
            encoder = module._scratch_encoder(vit, channels_a, size)
        else:
            from transformers import ViTConfig, ViTModel

            init = module.AUTO_CHECKPOINT if vit.init == "auto" else vit.init
            folder = Path(init).expanduser()
            config = ViTConfig.from_pretrained(str(folder) if folder.is_dir() else init, local_files_only=True)
            encoder = ViTModel(config, add_pooling_layer=False)
        return {"netG": module.VitTranslator(encoder, channels_b, vit.decoder_channels)}


def live_peak(net: torch.nn.Module, inputs, loss=None) -> int:
    """Peak bytes of the tensors alive at once while `net` (on the meta device) runs `inputs` (a tuple of
    arguments or a dict of keyword arguments): a no-grad pass, or with `loss` (output -> scalar) a
    forward and backward, gradients included. Weights and buffers are not counted."""
    from torch.utils._python_dispatch import TorchDispatchMode

    args, kwargs = (inputs, {}) if isinstance(inputs, tuple) else ((), inputs)
    owned = {t.untyped_storage()._cdata for t in [*net.parameters(), *net.buffers()]}
    owned |= {t.untyped_storage()._cdata for t in [*args, *kwargs.values()]}

    class Live(TorchDispatchMode):
        refs: dict[int, int] = {}
        sizes: dict[int, int] = {}
        now = peak = 0

        def drop(self, key: int) -> None:
            self.refs[key] -= 1
            if not self.refs[key]:
                del self.refs[key]
                self.now -= self.sizes.pop(key)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if not isinstance(t, torch.Tensor):
                    continue
                key = t.untyped_storage()._cdata
                if key in owned:
                    continue
                if key not in self.refs:
                    self.refs[key], self.sizes[key] = 0, t.untyped_storage().nbytes()
                    self.now += self.sizes[key]
                    self.peak = max(self.peak, self.now)
                self.refs[key] += 1
                weakref.finalize(t, self.drop, key)
            return out

    mode = Live()
    mode.refs, mode.sizes = {}, {}
    net.train(loss is not None)
    with mode, torch.set_grad_enabled(loss is not None):
        out = net(*args, **kwargs)
        if loss is not None:
            loss(out).backward()
        del out
    return mode.peak


def check_memory(label: str, need: int, stage: str, cfg: Config) -> None:
    """Refuse a CPU stage whose estimated `need` exceeds the memory available, in one line with the keys
    that bring it down (their values and a --set each). Not on CUDA (its out-of-memory error is answered
    by `out_of_memory`), nor off Linux, nor with runtime.memory_check = false."""
    from genaug.engine import resolve_device

    if not getattr(cfg.runtime, "memory_check", True) or resolve_device(cfg.runtime) != "cpu":
        return
    available = memory_available()
    if available is None or need <= available:
        return
    raise UserError(f"{label} would need about {need / GB:.1f} GB of memory on the CPU and {available / GB:.1f} GB "
                    f"is available; lower {_lowering(cfg, stage)} (completed stages are kept; "
                    "--set runtime.memory_check=false runs it anyway)")



def _lowering(cfg: Config, stage: str) -> str:
    """'ddpm.batch_size = 32 (--set ddpm.batch_size=16), ...': the keys that lower a stage's memory."""
    keys = [k for k in BATCH_KEYS.get(stage, []) if k != "eval.batch_size"] + MEMORY_KEYS.get(stage, [])
    shown = []
    for key in keys:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if name == "attention_levels":
            levels = len(cfg.ddpm.block_out_channels)
            if not value:
                continue
            deeper = sorted({(level % levels) + 1 for level in value if level % levels + 1 < levels})
            suggestion = str(deeper or []).replace(" ", "")
            shown.append(f"{key} = {str(value).replace(' ', '')} (--set {key}={suggestion}: "
                         "attention at lower resolutions, or none)")
        elif name == "image_size":
            side = value or cfg.data.image_size
            if stage == "ddpm" and not value:
                shown.append(f"{key} = 0 (the data's {side}; --set {key}={_halved(cfg, side)})")
            else:
                shown.append(f"{key} = {side} (--set {key}={_halved(cfg, side)})")
        elif name == "patch_size":
            if key == "mae.patch_size" and cfg.mae.init != "scratch":
                continue
            shown.append(f"{key} = {value} (--set {key}={value * 2})")
        elif isinstance(value, int) and not isinstance(value, bool):
            if name == "batch_size" and section == "eval" and not value:
                shown.append(f"{key} = 0 (64 on the CPU; --set {key}=16)")
            elif value > 1 or name != "batch_size":
                shown.append(f"{key} = {value} (--set {key}={max(1, value // 2)})")
    return ", ".join(shown) or "the stage's batch size"


def _halved(cfg: Config, side: int) -> int:
    return max(8, side // 2)
