"""`configs/paper.toml` end to end: wall time and where it goes, per stage.

    python bench/paper_study.py                 # on a CUDA machine (the ≤ 10 minute target of issue 6)
    python bench/paper_study.py --tiny          # on the CPU: a toy-sized run that checks the script

Only what needs downloads is overridden: the built-in scenes data instead of KAIST, and a scratch
ViTMAE-Base (patch 16, `mae.preset = "base"`) instead of `facebook/vit-mae-base`. Everything else
(both modalities, every condition and control, 5 seeds, the DDPM and the CycleGAN trained, DDPM-1000
sampling) is the config's. Prints the wall time, the seconds summed per stage from the manifests, and
each stage's compile decisions; appends every figure to OUT/paper_study.jsonl.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import Report

ROOT = Path(__file__).resolve().parents[1]
NO_DOWNLOADS = ['data.source="scenes"', 'data.scenes.n_frames=1600', 'mae.init="scratch"', 'mae.preset="base"',
                "mae.patch_size=16"]
TINY = ["data.image_size=32", "data.n_pool=40", "data.n_train=16", "data.n_test=16", "data.scenes.n_frames=120",
        'ddpm.preset="tiny"', "ddpm.epochs=0", "ddpm.steps=4", "ddpm.sample_steps=3", 'ddpm.sampler="dpmsolver++"',
        "cyclegan.num_downs=3", "cyclegan.ngf=8", "cyclegan.ndf=8", "cyclegan.steps=4", 'mae.preset="micro"',
        "mae.patch_size=4", "mae.epochs=1", "study.seeds=[0, 1]", "study.n_synthetic=16"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="toy sizes on the CPU: checks the script only")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_out")))
    parser.add_argument("--set", dest="extra", action="append", default=[], help="more overrides")
    args = parser.parse_args()
    report = Report(args.out, "paper_study")
    run_dir = args.out / "paper_run"
    overrides = [*NO_DOWNLOADS, *(TINY if args.tiny else []), *args.extra]
    command = [sys.executable, "-m", "genaug", "run", str(ROOT / "configs" / "paper.toml"), "--out", str(run_dir)]
    for item in overrides:
        command += ["--set", item]
    report("command", argv=command[1:])
    began = time.perf_counter()
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": path})
    wall = time.perf_counter() - began
    seconds, counts, compiled = collections.Counter(), collections.Counter(), []
    for manifest in run_dir.glob("*/*/manifest.json"):
        m = json.loads(manifest.read_text())
        seconds[m["stage"]] += m.get("seconds", 0)
        counts[m["stage"]] += 1
        for log, timing in m.get("timing", {}).items():
            if timing.get("compile"):
                compiled.append([m["name"], timing.get("first_step_s"), timing.get("steady_step_s")])
    report("paper study", exit_status=done.returncode, wall_s=round(wall, 1), target_s=600,
           stage_seconds={k: round(v, 1) for k, v in seconds.items()}, stage_counts=dict(counts))
    report("compiled stages (name, first step s, steady step s)", stages=compiled)


if __name__ == "__main__":
    main()
