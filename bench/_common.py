"""What every GPU bench script shares: synchronised timing and a report that survives a cut-short run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

# Dense bf16 tensor-core peak (FLOP/s) of the cards these benches run on, from NVIDIA's data sheets
# (SXM parts; the H200 has the H100's compute and more memory).
BF16_PEAK = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bf16_peak() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for card, peak in BF16_PEAK.items() if card in name), None)


class Report:
    """Prints each figure as a JSON line as soon as it is measured and appends it to OUT/<name>.jsonl."""

    def __init__(self, out: Path, name: str):
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / f"{name}.jsonl"
        self.path.write_text("")

    def __call__(self, name: str, **figures):
        row = {"name": name, **figures}
        print(json.dumps(row), flush=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
