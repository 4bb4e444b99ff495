"""CycleGAN RGB (domain A) -> thermal (domain B), trained on unpaired images (Zhu et al. 2017).

Paper names: netG_A: A -> B, netG_B: B -> A, netD_A judges domain B, netD_B judges domain A.
real_A and real_B are drawn independently, so no pairing is ever used even where the source has it.
Generators (`generator`): `resnet` = junyanz resnet_<n_blocks>blocks (his CycleGAN default); `unet` =
junyanz UnetGenerator as the CycleGAN option builds it (instance norm, no dropout), the seed's choice.
Saved as `weights.safetensors` (all four networks) + `config.json` (the config, channels, and the
image_size / resize the inputs were fitted with, so new files can be prepared alike); nothing is pickled.
`translate` (from networks) applies netG_A to uint8 images.
"""

from __future__ import annotations

from pathlib import Path

import torch

from genaug.config import CycleGANConfig
from genaug.engine import Trainer
from genaug.generators.networks import (GANLoss, ImagePool, PatchDiscriminator, ResnetGenerator, UnetGenerator,
                                        init_weights, load_network, read_config, save_networks, translate)

NETWORKS = ("netG_A", "netG_B", "netD_A", "netD_B")


def build_generator(cfg: CycleGANConfig, in_channels: int, out_channels: int) -> torch.nn.Module:
    """(B, in_channels, S, S) -> (B, out_channels, S, S), both in [-1, 1]."""
    if cfg.generator == "resnet":
        return ResnetGenerator(in_channels, out_channels, cfg.ngf, cfg.n_blocks, cfg.n_downsampling)
    # junyanz's CycleGAN options: --norm instance (batch statistics of 1-8 unpaired images are noise, and
    # eval mode would swap in running averages the generator never trained with) and --no_dropout.
    return UnetGenerator(in_channels, out_channels, cfg.num_downs, cfg.ngf, dropout=False, norm="instance")


def build(cfg: CycleGANConfig, channels_a: int, channels_b: int) -> dict[str, torch.nn.Module]:
    return {
        "netG_A": init_weights(build_generator(cfg, channels_a, channels_b)),
        "netG_B": init_weights(build_generator(cfg, channels_b, channels_a)),
        "netD_A": init_weights(PatchDiscriminator(channels_b, cfg.ndf, cfg.d_layers)),
        "netD_B": init_weights(PatchDiscriminator(channels_a, cfg.ndf, cfg.d_layers)),
    }


def linear_decay(optimizer: torch.optim.Optimizer, steps: int, decay_start: float):
    """Constant LR, then linear decay to zero over the remaining steps (junyanz `linear` policy)."""
    constant = int(steps * decay_start)

    def factor(step: int) -> float:
        return 1.0 - max(0, step - constant) / max(1, steps - constant)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(cfg: CycleGANConfig, images_a: torch.Tensor, images_b: torch.Tensor, seed: int, trainer: Trainer,
          log_note=print):
    """uint8 `images_a` (N, Ca, S, S), `images_b` (M, Cb, S, S) -> (networks, logged rows)."""
    torch.manual_seed(seed)
    channels_a, channels_b = images_a.shape[1], images_b.shape[1]
    nets = build(cfg, channels_a, channels_b)
    identity = cfg.lambda_identity if channels_a == channels_b else 0.0
    if cfg.lambda_identity and not identity:
        log_note(f"cyclegan: identity loss off ({channels_a}-channel A vs {channels_b}-channel B)")
    params_g = [*nets["netG_A"].parameters(), *nets["netG_B"].parameters()]
    params_d = [*nets["netD_A"].parameters(), *nets["netD_B"].parameters()]
    optimizer_g = torch.optim.Adam(params_g, lr=cfg.lr, betas=(cfg.beta1, 0.999), fused=trainer.cuda)
    optimizer_d = torch.optim.Adam(params_d, lr=cfg.lr, betas=(cfg.beta1, 0.999), fused=trainer.cuda)
    schedules = [linear_decay(o, cfg.steps, cfg.decay_start) for o in (optimizer_g, optimizer_d)]
    prepared = trainer.prepare(*nets.values(), optimizer_g, optimizer_d, *schedules)
    netG_A, netG_B, netD_A, netD_B, optimizer_g, optimizer_d, *schedules = prepared
    batches_a = trainer.batches(images_a, seed, cfg.augment)
    batches_b = trainer.batches(images_b, seed + 1, cfg.augment)  # independent draws: unpaired
    pool_A = ImagePool(cfg.pool_size, seed, trainer.device)
    pool_B = ImagePool(cfg.pool_size, seed + 1, trainer.device)
    gan = GANLoss(cfg.gan_loss)
    l1 = torch.nn.L1Loss()
    for net in (netG_A, netG_B, netD_A, netD_B):
        net.train()

    def step(_: int) -> dict[str, torch.Tensor]:
        real_A = batches_a(cfg.batch_size) * 2 - 1
        real_B = batches_b(cfg.batch_size) * 2 - 1
        # G step, with D frozen: fool both discriminators and come back where each image started.
        for net in (netD_A, netD_B):
            net.requires_grad_(False)
        with trainer.autocast():
            fake_B, fake_A = netG_A(real_A), netG_B(real_B)
            rec_A, rec_B = netG_B(fake_B), netG_A(fake_A)
            loss_G_A, loss_G_B = gan(netD_A(fake_B), True), gan(netD_B(fake_A), True)
            loss_cycle = (l1(rec_A.float(), real_A) + l1(rec_B.float(), real_B)) * cfg.lambda_cycle
            loss_G = loss_G_A + loss_G_B + loss_cycle
            if identity:
                loss_idt = (l1(netG_A(real_B).float(), real_B) + l1(netG_B(real_A).float(), real_A)) * cfg.lambda_cycle * identity
                loss_G = loss_G + loss_idt
        optimizer_g.zero_grad(set_to_none=True)
        trainer.backward(loss_G)
        optimizer_g.step()
        # D step: real images vs (pooled) fakes, halved so D learns slower than G (paper, section 7.1).
        for net in (netD_A, netD_B):
            net.requires_grad_(True)
        with trainer.autocast():
            fake_B_seen, fake_A_seen = pool_B.query(fake_B), pool_A.query(fake_A)
            loss_D_A = 0.5 * (gan(netD_A(real_B), True) + gan(netD_A(fake_B_seen.detach()), False))
            loss_D_B = 0.5 * (gan(netD_B(real_A), True) + gan(netD_B(fake_A_seen.detach()), False))
        optimizer_d.zero_grad(set_to_none=True)
        trainer.backward(loss_D_A + loss_D_B)
        optimizer_d.step()
        for schedule in schedules:
            schedule.step()
        return {"G_A": loss_G_A, "G_B": loss_G_B, "cycle": loss_cycle, "D_A": loss_D_A, "D_B": loss_D_B}

    # Where training stands, for checkpoints: the pools' RNGs and histories decide which fakes D sees next,
    # the samplers' generators which images come next (torch's global RNG is the trainer's own).
    state = {"netG_A": netG_A, "netG_B": netG_B, "netD_A": netD_A, "netD_B": netD_B,
             "optimizer_g": optimizer_g, "optimizer_d": optimizer_d,
             "schedule_g": schedules[0], "schedule_d": schedules[1],
             "batches_a": batches_a, "batches_b": batches_b, "pool_A": pool_A, "pool_B": pool_B}
    history = trainer.fit(step, state=state)
    unwrap = trainer.accelerator.unwrap_model
    return {name: unwrap(net) for name, net in zip(NETWORKS, (netG_A, netG_B, netD_A, netD_B))}, history


def save(folder: Path, cfg: CycleGANConfig, nets: dict[str, torch.nn.Module], channels_a: int, channels_b: int,
         image_size: int, resize: str) -> None:
    """`image_size` / `resize`: how the training images were fitted (data.image_size, data.resize)."""
    save_networks(folder, nets, {"model": "cyclegan", "channels_a": channels_a, "channels_b": channels_b,
                                 "image_size": image_size, "resize": resize, **cfg.model_dump(mode="json")})


def load_generator(folder: Path, direction: str = "netG_A") -> torch.nn.Module:
    config = read_config(folder)
    cfg = CycleGANConfig.model_validate({k: v for k, v in config.items() if k in CycleGANConfig.model_fields})
    return load_network(folder, direction, build(cfg, config["channels_a"], config["channels_b"])[direction])
