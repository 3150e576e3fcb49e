"""How fast host workers feed a streamed run: images per second read, decoded and augmented (random-resized
crop + flip, or pad-crop + flip) from an ImageFolder zip or directory, for each number of workers.

    python scripts/stream_throughput.py DATA [--size 224] [--workers 1,2] [--batch-size 256] [--batches 20]

A streamed run is input-bound when this is below the trainer's img/s for the net (`resgrow bench`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform

from resgrow.data.stream import open_stream, throughput


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--augment", default="imagenet", choices=("imagenet", "crop"))
    p.add_argument("--workers", default="1,2")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=20)
    a = p.parse_args()
    data = open_stream(a.data, a.size, a.augment)
    rows = []
    for w in (int(x) for x in a.workers.split(",")):
        rate = throughput(data, w, a.batch_size, a.batches)
        rows.append({"workers": w, "img_per_s": round(rate, 1)})
        print(f"{w} worker{'s' * (w > 1)}: {rate:,.0f} img/s ({a.size}x{a.size}, {a.augment}, batch {a.batch_size})",
              flush=True)
    print(json.dumps({"data": data.summary(), "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                      "rows": rows}))


if __name__ == "__main__":
    main()
