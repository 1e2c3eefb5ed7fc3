"""benchmarks/study_recipes.py's verdicts (issue 18 item 5): the report's "agrees?" column from per-seed paired gaps,
on hand-made results (no training: the study itself takes an hour)."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("study_recipes", os.path.join(ROOT, "benchmarks", "study_recipes.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def runs(*finals):
    return [{"final": f} for f in finals]


def verdicts(study, results):
    return {claim: (shown, verdict) for claim, shown, verdict in study.comparisons(results)}


def test_paired_gaps_are_per_seed_relative_differences(study):
    gaps = study.paired_gaps({"a": runs(4.04, 3.96), "b": runs(4.0, 4.0)}, "a", "b")
    assert gaps == pytest.approx([1.0, -1.0])


def test_a_claim_holds_only_when_every_seed_shows_it(study):
    results = {
        "bf16": runs(4.0, 4.0),
        "fp8_block": runs(4.004, 3.996),        # +-0.1%: within DeepSeek's 0.25%
        "fp8_current": runs(4.0, 4.0),
        "nvfp4": runs(4.06, 4.02),              # above fp8 on both seeds: the NVFP4 paper's ordering
        "nvfp4 no SR": runs(4.08, 4.00),        # +0.5%, -0.5%: the seeds disagree
        "mxfp4": runs(4.0, 3.99),               # nvfp4 worse than mxfp4 on both seeds: the opposite
        "quartet SR": runs(4.0, 4.0),
    }
    v = verdicts(study, results)
    assert v["DeepSeek-V3: FP8 block scaling within 0.25% of BF16"][1] == "yes, every seed"
    assert v["NVFP4 paper: NVFP4 above FP8 (by ~1.5% at 12B)"] == ("nvfp4 vs fp8_current: +1.50%, +0.50%", "yes, every seed")
    assert v["NVFP4 paper: SR on gradients matters (RTN worse)"][1] == "seeds disagree: cannot order them"
    assert v["NVFP4 paper: NVFP4 better than MXFP4"][1] == "no, every seed shows the opposite"
    # Claims whose runs are missing (the study ran with --only) are left out, not guessed.
    assert "NVFP4 paper: RHT on wgrad helps (at scale)" not in v
    assert "Quartet v4: round-to-nearest backward better than SR" not in v


def test_the_within_claim_says_which_way_it_misses(study):
    lower = verdicts(study, {"bf16": runs(4.0, 4.0), "fp8_block": runs(3.97, 3.98)})
    assert lower["DeepSeek-V3: FP8 block scaling within 0.25% of BF16"][1].startswith("no: lower loss than bf16")
    mixed = verdicts(study, {"bf16": runs(4.0, 4.0), "fp8_block": runs(4.04, 4.001)})
    assert mixed["DeepSeek-V3: FP8 block scaling within 0.25% of BF16"][1] == "seeds disagree"


def test_flattened_means_under_one_percent_over_the_last_tenth(study):
    # Held-out losses at every tenth of the steps: only the last interval decides.
    drop, flat = study.flattening([5.0, 4.0, 3.5, 3.48])
    assert drop == pytest.approx(100 * (3.48 - 3.5) / 3.5) and flat
    drop, flat = study.flattening([3.6, 3.5, 3.46])
    assert drop == pytest.approx(-1.142857, rel=1e-5) and not flat
    assert not study.flattening([3.0, 3.04])[1]  # rising by more than 1% is not flat either


def test_the_training_length_limit_names_the_sizes_that_did_not_flatten(study):
    steep = study.limits({"default": True, "10m": False})
    assert any(line.startswith("- **Training length.**") and "had not flattened at 10m" in line for line in steep)
    flat = study.limits({"default": True, "10m": True})
    assert any(line.startswith("- **Training length.**") and "flattened at every size" in line for line in flat)
    assert len(flat) == len(study.LIMITS) + 1


def test_each_size_runs_its_own_recipes_unless_all_are_asked_for(study):
    everything = list(study.RECIPES)
    assert study.size_recipes("default", everything, False) == everything
    assert study.size_recipes("10m", everything, False) == study.SIZES["10m"]["recipes"]
    assert study.size_recipes("10m", everything, True) == everything
    # --only narrows both; bf16 (the reference) is always among them.
    assert study.size_recipes("10m", ["bf16", "mxfp4"], False) == ["bf16"]


def test_the_closing_table_holds_a_claim_only_where_every_size_shows_it(study):
    yes, split = "yes, every seed", "seeds disagree: cannot order them"
    claims = [c for c, *_ in study.CLAIMS]
    rows = study.across_sizes({"default": {claims[1]: yes, claims[2]: yes},
                               "10m": {claims[1]: yes, claims[2]: split}})
    assert f"| {claims[1]} | {yes} | {yes} | **yes** |" in rows
    assert f"| {claims[2]} | {yes} | {split} | no |" in rows
    # A claim one size could not test (its runs missing there) is left out; one size alone has no such table.
    assert not any(claims[3] in row for row in rows)
    assert study.across_sizes({"default": {claims[1]: yes}}) == []


def test_wall_time_of_added_runs_trained_over_two_invocations_comes_from_their_steps(study, tmp_path):
    import json
    for d, ms in (("10m-a-s0", [60000.0, 120000.0]), ("10m-a-s1", [54000.0])):
        (tmp_path / d).mkdir()
        (tmp_path / d / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "ms_per_step": m}) + "\n"
                                                            for i, m in enumerate(ms)))
    # The last invocation trained one of the two runs: 234 s of steps in all, 3.9 run-minutes.
    (tmp_path / "study_wall_all_recipes.json").write_text(json.dumps({"wall_s": 30.0, "jobs": 1}))
    (line,) = study.walls(str(tmp_path), ["10m-a-s0", "10m-a-s1"], 2)
    assert line.startswith("The 2 runs `--all-recipes` adds were trained over more than one invocation")
    assert "(the last took 0.5 minutes for 1 of them)" in line
    assert "took 4 run-minutes, about 2 minutes of wall time 2 at a time" in line
    # One invocation that ran them all: its own wall time.
    (tmp_path / "study_wall_all_recipes.json").write_text(json.dumps({"wall_s": 120.0, "jobs": 2}))
    assert study.walls(str(tmp_path), ["10m-a-s0", "10m-a-s1"], 2) == [
        "`--all-recipes` after it took 2.0 minutes of wall time for the 2 runs it adds."]
