"""`nibble-train plot` (issue 18 items 1 and 2, python/nibble/plot.py) on real runs' files: every PNG is written, is an
image, and is not blank; a directory that is not a run is named."""
import os
import subprocess

import matplotlib.image
import numpy as np

from test_train_cli import BINARY, ENV, run, tiny_args, tokens  # noqa: F401


def test_plots_from_two_runs(tokens, tmp_path):
    runs = []
    for recipe in ("bf16", "nvfp4"):
        out = tmp_path / recipe
        r = run(tiny_args(tokens, out, model__recipe=recipe, train__steps=12, train__eval_every=6,
                          train__sample_tokens=0, train__eval_batches=1, checkpoint__every=12,
                          train__stats_every=3))
        assert r.returncode == 0, r.stdout + r.stderr
        runs.append(str(out))
    png = tmp_path / "png"
    r = subprocess.run([BINARY, "plot", *runs, "--out", str(png)], capture_output=True, text=True, env=ENV,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    names = sorted(os.path.basename(line) for line in r.stdout.split())
    # (the bf16 run quantizes nothing: no statistics, no heat map)
    assert names == ["loss.png", "loss_gap.png", "memory.png", "snr_nvfp4.png", "throughput.png"], r.stdout
    for name in names:
        image = matplotlib.image.imread(png / name)
        assert image.shape[0] > 200 and image.shape[1] > 400, (name, image.shape)
        assert float(np.std(image)) > 0.01, f"{name} is blank"


def test_a_directory_without_records_is_named(tmp_path):
    r = subprocess.run([BINARY, "plot", str(tmp_path / "nothing"), "--out", str(tmp_path / "png")],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode != 0 and "has no metrics.jsonl" in r.stderr, r.stdout + r.stderr
