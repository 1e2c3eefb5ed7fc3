"""plan/calibrate.py's fits and the nibble-train config it measures the layer remainder with (issue 20 item 3).

The collective fits are checked on times made from known parameters with plan/collectives.cpp's ring model:
latency and bandwidth come back from all-gather and send/recv alone, an all-reduce's extra summation comes back
as its rate, and all-reduces that take no longer than their data movement give no summation term. The remainder
run's config is checked by nibble-plan itself, which must read it as calibrate.py means it (every layer in the
recipe, one micro-batch per step). No machine is measured here."""
import json
import os
import shutil
import subprocess

import pytest

from plan_calibrate import load_calibrate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAN = os.environ.get("NIBBLE_PLAN") or shutil.which("nibble-plan") or os.path.join(ROOT, "build", "nibble-plan")
SIZES = [4096, 65536, 1 << 20, 1 << 22]


calibrate = load_calibrate()


def synthetic_mpi(ranks, latency_s, seconds_per_byte, reduce_seconds_per_byte):
    """The times plan/collectives.cpp's model gives, with an all-reduce summing (n-1)/n of its buffer."""
    mpi = {"ranks": ranks}
    for name in ("all_reduce", "all_gather", "send_recv"):
        rows = []
        for size in SIZES:
            latencies, moved = calibrate.ring_terms(name, ranks, size)
            t = latencies * latency_s + moved * seconds_per_byte
            if name == "all_reduce":
                t += (ranks - 1) / ranks * size * reduce_seconds_per_byte
            rows.append([size, t])
        mpi[name] = rows
    return mpi


@pytest.mark.parametrize("ranks", [2, 4])
def test_link_and_summation_come_back_from_their_own_collectives(ranks):
    latency, per_byte, per_byte_reduced = 7e-6, 1 / 11e9, 1 / 3e9
    mpi = synthetic_mpi(ranks, latency, per_byte, per_byte_reduced)
    alpha, beta = calibrate.fit_alpha_beta(mpi)
    assert alpha == pytest.approx(latency, rel=1e-9)
    assert beta == pytest.approx(per_byte, rel=1e-9)
    assert calibrate.fit_reduce(mpi, alpha, beta) == pytest.approx(per_byte_reduced, rel=1e-9)


def test_all_reduces_at_the_ring_model_give_no_summation_term():
    mpi = synthetic_mpi(2, 5e-6, 1 / 10e9, 0.0)
    alpha, beta = calibrate.fit_alpha_beta(mpi)
    assert calibrate.fit_reduce(mpi, alpha, beta) == pytest.approx(0.0, abs=1e-18)
    for size_time in mpi["all_reduce"]:  # faster than the model (measurement noise): still none, never negative
        size_time[1] *= 0.8
    assert calibrate.fit_reduce(mpi, alpha, beta) == 0.0


@pytest.mark.skipif(not os.path.isfile(PLAN), reason=f"{PLAN} not built (set NIBBLE_PLAN)")
def test_remainder_config_is_read_by_nibble_plan_as_meant(tmp_path):
    m = calibrate.parse_model("4,128,256,4,688")
    config = tmp_path / "remainder.toml"
    config.write_text(calibrate.remainder_config(m, "nvfp4", 2, str(tmp_path / "tokens"), str(tmp_path / "out"), 8))
    def predict(path):
        out = subprocess.run([PLAN, "--cluster", "b200", "--config", str(path), "predict", "--tp", "1", "--cp", "1",
                              "--dp", "1", "--pp", "1"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    p = predict(config)
    assert (p["recipe"], p["micro_batch"]) == ("nvfp4", 4)
    # Every layer in nvfp4 (bf16_first = bf16_last = 0): a B200's NVFP4 GEMMs, faster than the same config with its
    # last layer kept in BF16 (the nvfp4 preset's default elsewhere).
    kept = tmp_path / "last_in_bf16.toml"
    kept.write_text(config.read_text().replace("bf16_last = 0", "bf16_last = 1"))
    assert p["ms"]["gemm"] < predict(kept)["ms"]["gemm"]
