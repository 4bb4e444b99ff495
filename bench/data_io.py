"""Data-layer timings (issue 3): `genaug data inspect` on a KAIST-size tree of empty placeholder
files, and loading a 1,000-image decoded set from the tensor cache. Prints figures; asserts nothing.

    python bench/data_io.py [--pairs 95328] [--size 224]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path


def placeholder_tree(root: Path, pairs: int) -> None:
    """KAIST layout, 12 sets x 9 videos, zero-byte JPEGs."""
    per_video = -(-pairs // (12 * 9))
    made = 0
    for s in range(12):
        for v in range(9):
            for folder in ("visible", "lwir"):
                (root / "images" / f"set{s:02d}" / f"V{v:03d}" / folder).mkdir(parents=True)
            for i in range(min(per_video, pairs - made)):
                for folder in ("visible", "lwir"):
                    (root / "images" / f"set{s:02d}" / f"V{v:03d}" / folder / f"I{i:05d}.jpg").touch()
                made += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=95_328)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["GENAUG_CACHE"] = str(tmp / "cache")
        from genaug.data import kaist

        placeholder_tree(tmp / "kaist", args.pairs)
        start = time.perf_counter()
        report = kaist.inspect(tmp / "kaist")
        print(f"inspect (headers=sample) on {report['pairs']:,} empty pairs: {time.perf_counter() - start:.2f} s "
              f"({report['headers']['unreadable']['count']} of {report['headers']['checked']} sampled files unreadable)")

        from genaug.config import DataConfig
        from genaug.data.cache import load_cached
        from genaug.data.sources import ScenesSource

        data = DataConfig(image_size=args.size, scenes={"n_frames": 1000, "width": 280, "height": 224})
        source = ScenesSource(data, seed=0)
        refs = source.scan().frames
        start = time.perf_counter()
        load_cached(source, refs, data, 0, ("rgb", "thermal"))
        decode = time.perf_counter() - start
        start = time.perf_counter()
        frames, hit = load_cached(source, refs, data, 0, ("rgb", "thermal"))
        load = time.perf_counter() - start
        total = int(frames.rgb.sum()) + int(frames.thermal.sum())  # every byte read (the file is memory-mapped)
        touched = time.perf_counter() - start
        print(f"1,000 frames at {args.size}² (RGB + thermal): render + fit + cache {decode:.2f} s; "
              f"cached load {load:.3f} s, every byte read {touched:.3f} s "
              f"(hit={hit}, {frames.rgb.numel() + frames.thermal.numel():,} bytes, checksum {total})")


if __name__ == "__main__":
    main()
