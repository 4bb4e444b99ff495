"""pix2pix RGB (A) -> thermal (B), trained on aligned pairs (Isola et al. 2017).

netG: U-Net; netD: a conditional PatchGAN that judges (real_A, B) side by side, so it can tell a
plausible thermal image that does not belong to its RGB frame. Loss: GAN + lambda_L1 * |fake_B - real_B|.
Each step follows the reference order: forward, D step on detached fakes, G step with D frozen.
A and B are sampled as one stacked tensor, so a flip or crop moves both alike and the pairs stay aligned.
Saved as `weights.safetensors` + `config.json` (the config, channels, and the image_size / resize the
inputs were fitted with); nothing is pickled.
"""

from __future__ import annotations

from pathlib import Path

import torch

from genaug.config import Pix2PixConfig
from genaug.engine import Trainer
from genaug.generators.cyclegan import linear_decay
from genaug.generators.networks import (GANLoss, PatchDiscriminator, UnetGenerator, init_weights, load_network,
                                        read_config, save_networks)


def build(cfg: Pix2PixConfig, channels_a: int, channels_b: int) -> dict[str, torch.nn.Module]:
    return {
        "netG": init_weights(UnetGenerator(channels_a, channels_b, cfg.num_downs, cfg.ngf)),
        "netD": init_weights(PatchDiscriminator(channels_a + channels_b, cfg.ndf, cfg.d_layers)),
    }


def train(cfg: Pix2PixConfig, images_a: torch.Tensor, images_b: torch.Tensor, seed: int, trainer: Trainer,
          log_note=print):
    """Aligned uint8 `images_a` (N, Ca, S, S) and `images_b` (N, Cb, S, S) -> (networks, logged rows).
    `log_note` is the translators' shared way to state a fact about the run (this one has none to state)."""
    if len(images_a) != len(images_b):
        raise ValueError("pix2pix needs aligned pairs: as many A images as B images")
    torch.manual_seed(seed)
    channels_a, channels_b = images_a.shape[1], images_b.shape[1]
    nets = build(cfg, channels_a, channels_b)
    adam = dict(lr=cfg.lr, betas=(cfg.beta1, 0.999), fused=trainer.cuda)
    optimizer_g = torch.optim.Adam(nets["netG"].parameters(), **adam)
    optimizer_d = torch.optim.Adam(nets["netD"].parameters(), **adam)
    schedules = [linear_decay(o, cfg.steps, cfg.decay_start) for o in (optimizer_g, optimizer_d)]
    netG, netD, optimizer_g, optimizer_d, *schedules = trainer.prepare(
        nets["netG"], nets["netD"], optimizer_g, optimizer_d, *schedules)
    pairs = trainer.batches(torch.cat([images_a, images_b], dim=1), seed, cfg.augment)
    gan, l1 = GANLoss(cfg.gan_loss), torch.nn.L1Loss()
    netG.train()
    netD.train()

    def step(_: int) -> dict[str, torch.Tensor]:
        real_A, real_B = (pairs(cfg.batch_size) * 2 - 1).split([channels_a, channels_b], dim=1)
        with trainer.autocast():
            fake_B = netG(real_A)
            # D step: (A, real B) is real, (A, fake B) is fake.
            netD.requires_grad_(True)
            loss_D = 0.5 * (gan(netD(torch.cat([real_A, fake_B.detach()], 1)), False)
                            + gan(netD(torch.cat([real_A, real_B], 1)), True))
        optimizer_d.zero_grad(set_to_none=True)
        trainer.backward(loss_D)
        optimizer_d.step()
        # G step, with D frozen: fool D, and stay close to the real thermal frame.
        netD.requires_grad_(False)
        with trainer.autocast():
            loss_G_GAN = gan(netD(torch.cat([real_A, fake_B], 1)), True)
            loss_G_L1 = l1(fake_B.float(), real_B) * cfg.lambda_l1
        optimizer_g.zero_grad(set_to_none=True)
        trainer.backward(loss_G_GAN + loss_G_L1)
        optimizer_g.step()
        for schedule in schedules:
            schedule.step()
        return {"G_GAN": loss_G_GAN, "G_L1": loss_G_L1, "D": loss_D}

    # Where training stands, for checkpoints (dropout draws from torch's global RNG, which the trainer adds).
    state = {"netG": netG, "netD": netD, "optimizer_g": optimizer_g, "optimizer_d": optimizer_d,
             "schedule_g": schedules[0], "schedule_d": schedules[1], "pairs": pairs}
    history = trainer.fit(step, state=state)
    unwrap = trainer.accelerator.unwrap_model
    return {"netG": unwrap(netG), "netD": unwrap(netD)}, history


def save(folder: Path, cfg: Pix2PixConfig, nets: dict[str, torch.nn.Module], channels_a: int, channels_b: int,
         image_size: int, resize: str) -> None:
    """`image_size` / `resize`: how the training images were fitted (data.image_size, data.resize)."""
    save_networks(folder, nets, {"model": "pix2pix", "channels_a": channels_a, "channels_b": channels_b,
                                 "image_size": image_size, "resize": resize, **cfg.model_dump(mode="json")})


def load_generator(folder: Path) -> torch.nn.Module:
    config = read_config(folder)
    cfg = Pix2PixConfig.model_validate({k: v for k, v in config.items() if k in Pix2PixConfig.model_fields})
    return load_network(folder, "netG", build(cfg, config["channels_a"], config["channels_b"])["netG"])
