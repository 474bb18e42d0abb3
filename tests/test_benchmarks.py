"""The comparison benchmark end to end on seconds-long runs (its `smoke` profile)."""

import json
import sys

import pytest

from .conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
compare = pytest.importorskip("compare_modalities")


def test_plan_shares_runs_between_parts_and_lists_every_variant():
    shared = {**compare.PROFILES["smoke"], "table": {}}  # no budget of the table's own: the parts share runs
    jobs = compare.plan(["image"], ["table", "batch", "augment"], shared, {"image": [{"name": "solarize", "p": 0.5}]})
    ids = [job.id for job in jobs]
    assert len(ids) == len(set(ids))
    # table: 2 seeds × 4 methods; batch: 2 objectives × 2 sizes, the default size shared with the table;
    # augment (the smoke pair is crop + flip): 2 removals, crop only and one addition, the default shared
    assert len(jobs) == 8 + 2 + 4
    variants = {job.variant for job in jobs if job.method == "byol" and job.seed == 0}
    assert variants == {"-random_resized_crop", "-horizontal_flip", "crop only", "+solarize", "default"}
    crop_only = next(job for job in jobs if job.variant == "crop only")
    assert all("random_resized_crop" in o and "horizontal_flip" not in o for o in crop_only.overrides)
    added = next(job for job in jobs if job.variant == "+solarize")
    assert all(o.endswith('{"name": "solarize", "p": 0.5}]') for o in added.overrides)
    byol = next(job for job in jobs if job.id == "image/byol/s0/b64/default")
    assert byol.parts == ["table", "batch", "augment"]


def test_a_table_budget_gives_the_table_its_own_runs():
    profile = compare.PROFILES["smoke"]
    budget = profile["table"]["image"]
    jobs = compare.plan(["image"], ["table", "batch", "augment"], profile, {})
    ids = [job.id for job in jobs]
    assert len(ids) == len(set(ids))
    table = [job for job in jobs if "table" in job.parts]
    assert len(table) == 8 and all(job.parts == ["table"] for job in table)
    assert all(job.id.endswith("default@table") and job.overrides == budget for job in table)
    # the sweeps share the default run among themselves, not with the table
    sweeps = [job for job in jobs if "table" not in job.parts]
    assert not any(o in budget for job in sweeps for o in job.overrides)
    byol = next(job for job in sweeps if job.id == "image/byol/s0/b64/default")
    assert byol.parts == ["batch", "augment"]
    assert len(sweeps) == 4 + 3  # batch: 2 objectives × 2 sizes; augment: 2 removals and crop only, the default shared


def test_methods_pick_the_tables_rows_and_leave_the_sweeps_alone():
    jobs = compare.plan(["image"], ["table", "batch"], compare.PROFILES["smoke"], {}, methods=("byol", "untrained"))
    table = [job for job in jobs if "table" in job.parts]
    expected = [("byol", 0), ("byol", 1), ("untrained", 0), ("untrained", 1)]
    assert sorted((job.method, job.seed) for job in table) == expected
    assert {job.method for job in jobs if "batch" in job.parts} == {"byol", "infonce"}


@pytest.mark.slow
def test_smoke_profile_writes_records_report_and_plots(tmp_path, fashion_mnist, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = compare.main(["--profile", "smoke", "--modalities", "image", "--parts", "table", "augment", "throughput",
                         "--augment", "{name: solarize, p: 0.5}", "--out", str(tmp_path / "out"),
                         "--throughput-steps", "2"])
    assert code == 0
    results = json.loads((tmp_path / "out" / "compare_modalities.json").read_text())
    methods = {(r["method"], r["seed"]) for r in results["records"]}
    assert methods >= {(m, s) for m in ("byol", "untrained", "supervised", "infonce") for s in (0, 1)}
    for record in results["records"]:
        assert record["config"]["modality"] == "image" and 0 <= record["linear_acc"] <= 1
    assert results["throughput"][0]["full_step_samples_per_s"] > 0
    report = (tmp_path / "out" / "compare_modalities.md").read_text()
    assert "## Modality table" in report and "## Augmentation value" in report and "+solarize" in report
    assert (tmp_path / "out" / "augment_value.png").stat().st_size > 1000
    table = [r for r in results["records"] if "table" in r["parts"]]
    assert len(table) == 8 and all(r["steps"] == 6 for r in table if r["method"] != "untrained")  # the table's budget
    assert all(r["steps"] == 4 for r in results["records"] if "table" not in r["parts"])
    for record in results["records"]:  # every figure is traceable to its record
        assert f"`{record['id']}`" in report
    assert "trainer.max_steps=6" in report  # the table's budget is stated
    assert "minutes in all" in report and results["reused"] == 0

    # --resume trains nothing that the JSON already holds, and the report says the records are reused
    assert compare.main(["--profile", "smoke", "--modalities", "image", "--parts", "table", "augment",
                         "--augment", "{name: solarize, p: 0.5}", "--out", str(tmp_path / "out"), "--resume"]) == 0
    resumed = json.loads((tmp_path / "out" / "compare_modalities.json").read_text())
    assert resumed["reused"] == len(resumed["records"]) == len(results["records"])
    assert [r["linear_acc"] for r in resumed["records"]] == [r["linear_acc"] for r in results["records"]]
    report = (tmp_path / "out" / "compare_modalities.md").read_text()
    n = len(results["records"])
    assert f"minutes; {n} of its {n} records were reused from an earlier run (`--resume`)" in report


def test_compare_takes_time_series_and_every_runs_overrides(tmp_path, monkeypatch):
    from .modalities.test_timeseries import TS_TINY, write_tiny_archive

    write_tiny_archive(tmp_path)
    monkeypatch.chdir(tmp_path)
    overrides = [o for o in TS_TINY if o != "modality=timeseries"] + [f"data.root={tmp_path}", "data.set=Tiny",
                                                                       "eval.l2_grid=[0.01]", "eval.label_draws=1",
                                                                       "trainer.monitor_every=0"]
    assert compare.main(["--profile", "smoke", "--modalities", "timeseries", "--parts", "table", "augment",
                         "--augment", "{name: magnitude_warp, p: 0.5}", "--out", str(tmp_path / "out"),
                         *overrides]) == 0
    results = json.loads((tmp_path / "out" / "compare_modalities.json").read_text())
    assert {r["config"]["data"]["set"] for r in results["records"]} == {"Tiny"}
    assert all(r["steps"] == 6 for r in results["records"] if r["method"] != "untrained")
    variants = {r["variant"] for r in results["records"]}
    assert {"default", "-crop_resize", "crop only", "+magnitude_warp"} <= variants  # a generic one, added by name
    report = (tmp_path / "out" / "compare_modalities.md").read_text()
    assert "timeseries (ucr Tiny)" in report and "data.set=Tiny" in report
    with pytest.raises(SystemExit, match="made with the overrides"):  # records of other settings are not reused
        compare.main(["--profile", "smoke", "--modalities", "timeseries", "--parts", "table", "--out",
                      str(tmp_path / "out"), "--resume", *overrides[:-1]])


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_in_its_smoke_mode_and_records_its_three_checks(tmp_path):
    import subprocess

    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--smoke", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(1) precision" in result.stdout and "PASS" in result.stdout
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert record["smoke"] and record["precision"]["passed"]
    assert len(record["precision"]["fp32"]["losses"]) == len(record["precision"]["bf16"]["losses"]) == 6
    assert [row["encoder"] for row in record["throughput"]] == ["resnet18", "resnet50"]
    for row in record["throughput"]:
        assert row["full_step_samples_per_s"] > 0 and 0 < row["full_over_encoder"]
    preset = record["preset"]
    assert preset["passed"] and preset["last_steps_loss"] < preset["first_steps_loss"]
    assert "(3) preset=cifar10-resnet18" in result.stdout


@pytest.mark.slow
def test_audio_errors_splits_the_eval_figure_by_clip_factor(tmp_path, capsys):
    import audio_errors

    from .conftest import cli
    from .modalities.test_audio import fake_spoken_digits

    fake_spoken_digits(tmp_path / "digits", per_folder=3)
    run_dir = tmp_path / "run"
    cli("train", "modality=audio", f"data.root={tmp_path / 'digits'}", f"run.dir={run_dir}", "data.batch_size=16",
            "trainer.max_steps=2", "trainer.progress=false", "model.hidden_dim=64", "model.projection_dim=32",
            "optim.warmup_epochs=0", "device=cpu", "encoder.d=64")
    grid = "eval.l2_grid=[0.01]"  # the split by factor is under test, not the choice of L2
    evaluated = cli("eval", str(run_dir), "eval.labels_per_class=2", "eval.label_draws=3", grid)
    evaluation = json.loads(evaluated.stdout.splitlines()[-1])

    assert audio_errors.main([str(run_dir), "eval.label_draws=3", grid, "--labels-per-class", "2"]) == 0
    out = capsys.readouterr().out
    overall = float(out.splitlines()[0].split(": ")[-1].split(" ")[0])
    assert overall == pytest.approx(evaluation["linear_acc_2"], abs=1e-4)  # the same features, draws and probes
    for table in ("| accent |", "| voice |", "| speed (wpm) |", "| pitch |", "| SNR (dB) |"):
        assert table in out
    # the two held-out accents, each with its 30 clips; five SNR bands over -5..10 dB
    assert "| en-029 | 30 |" in out and "| en-gb-scotland | 30 |" in out
    assert "| -5..-2 |" in out and "| +7..+10 |" in out
    confusion = [line for line in out.splitlines() if line.startswith("| zero |")][-1]
    assert sum(int(cell) for cell in confusion.strip("| ").split(" | ")[1:]) == 3 * 6  # 6 "zero" clips × 3 draws


@pytest.mark.slow
def test_monitor_cost_times_runs_with_and_without_the_monitor(tmp_path, fashion_mnist):
    import monitor_cost

    result = monitor_cost.main(["--modality", "image", "--steps", "4", "--rounds", "1", "--out", str(tmp_path),
                                "data.limit=256", "data.batch_size=64", "model.hidden_dim=64",
                                "model.projection_dim=32", "trainer.monitor_items=64", "device=cpu"])
    assert result["monitor_every"] == 4  # a tenth of the default run: 10 epochs of 4 steps
    row = result["rounds"][0]
    assert row["off"] > 0 and 0 < row["monitor"] < row["on"]
    assert json.loads((tmp_path / "monitor_cost.json").read_text()) == json.loads(json.dumps(result))


def test_timeseries_summary_gives_each_method_its_margin_over_the_untrained_encoder_of_the_same_seed():
    timeseries = pytest.importorskip("timeseries")
    records = [{"set": name, "seed": seed, "method": method, "linear_acc": acc, "linear_acc_5": acc - 0.1,
                "knn_acc": acc - 0.2}
               for name, base in (("A", 0.5), ("B", 0.7)) for seed in (0, 1)
               for method, acc in (("byol", base + 0.1 * (seed + 1)), ("untrained", base))]
    records.append({"set": "A", "seed": 2, "method": "byol", "linear_acc": 0.0, "linear_acc_5": 0.0, "knn_acc": 0.0})
    table = timeseries.summary(records, 5).splitlines()
    # margins of 10 and 20 points on seeds 0 and 1: +15.0, standard error 7.07 / √2 = 5.0; seed 2 has
    # no untrained run to pair with, so it counts in byol's mean but not in its margin
    assert "| A | byol − untrained | +15.0 ± 5.0 | +15.0 ± 5.0 | +15.0 ± 5.0 | 2 |" in table
    assert "| mean of 2 sets | byol − untrained | +15.0 ± 5.0 | +15.0 ± 5.0 | +15.0 ± 5.0 | 2 |" in table
    assert any(line.startswith("| A | byol | 43.3 ± ") and line.endswith(" | 3 |") for line in table)
    assert not any("untrained − untrained" in line for line in table)
    windows = [{**r, "linear_acc_whole": r["linear_acc"] + 0.05} for r in records]  # runs on windows
    table = timeseries.summary(windows, 5).splitlines()
    assert table[0] == "| set | method | linear_acc | linear_acc_5 | knn_acc | linear_acc_whole | runs |"
    assert "| A | byol − untrained | +15.0 ± 5.0 | +15.0 ± 5.0 | +15.0 ± 5.0 | +15.0 ± 5.0 | 2 |" in table


def test_raw_series_gives_a_raw_input_encoder_the_items_features(tmp_path):
    import raw_series

    from .conftest import cli
    from .modalities.test_timeseries import TS_TINY, write_tiny_archive

    write_tiny_archive(tmp_path)
    run_dir = tmp_path / "run"
    cli("train", *TS_TINY, f"data.root={tmp_path}", "data.set=Tiny", f"run.dir={run_dir}",
            "trainer.monitor_every=0")
    results = raw_series.main([str(run_dir)])
    assert results["raw"] == results["items"] and results["items"]["max_abs_diff_from_items"] == 0
    assert results["unresampled"]["max_abs_diff_from_items"] > 0.01  # the test series are 20-39 steps, not 39


def test_throughput_profiles_the_bare_step_by_operator(tmp_path, monkeypatch):
    import throughput

    from .modalities.test_timeseries import TS_TINY, write_tiny_archive

    write_tiny_archive(tmp_path)
    monkeypatch.chdir(tmp_path)
    overrides = [o for o in TS_TINY if o != "modality=timeseries"] + [f"data.root={tmp_path}", "data.set=Tiny"]
    assert throughput.main(["--modalities", "timeseries", "--steps", "3", "--warmup", "1", "--rounds", "1",
                            "--profile", "8", "--out", str(tmp_path / "out"), *overrides]) == 0
    record = json.loads((tmp_path / "out" / "throughput.json").read_text())["modalities"]["timeseries"]
    assert record["samples_per_s"]["full"] > 0 and record["samples_per_s"]["bare"] > 0
    profile = record["profile"]
    shares = [row["share"] for row in profile]
    assert len(profile) == 8 and shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
    assert any("convolution" in row["operator"] for row in profile)  # the FCN's step is mostly its convolutions


def test_timeseries_benchmark_records_each_run_and_the_margin_over_the_untrained_encoder(tmp_path, monkeypatch,
                                                                                        capsys):
    import timeseries

    from .modalities.test_timeseries import TS_TINY, write_tiny_archive

    write_tiny_archive(tmp_path)
    monkeypatch.chdir(tmp_path)
    overrides = [o for o in TS_TINY if o != "modality=timeseries"] + [f"data.root={tmp_path}", "eval.l2_grid=[0.01]"]
    args = ["--sets", "Tiny", "--seeds", "0", "1", "--methods", "byol", "untrained", "--label-draws", "2",
            "--out", str(tmp_path / "out"), *overrides]
    timeseries.main(args)
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    records = report["records"]
    assert [(r["seed"], r["method"]) for r in records] == [(0, "byol"), (0, "untrained"), (1, "byol"), (1, "untrained")]
    assert report["machine"]["precision"] in ("fp32", "bf16") and report["machine"]["cpu"]
    assert all(len(r["linear_acc_5_draws"]) == 2 for r in records)
    # the margin row is the mean over seeds of BYOL − untrained of the same seed, ± its standard error
    by = {(r["seed"], r["method"]): r for r in records}
    margins = [100 * (by[s, "byol"]["linear_acc_5"] - by[s, "untrained"]["linear_acc_5"]) for s in (0, 1)]
    error = abs(margins[0] - margins[1]) / 2  # two seeds: the standard deviation / √2
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| Tiny | byol − untrained"))
    assert row.split(" | ")[3] == f"{sum(margins) / 2:+.1f} ± {error:.1f}"

    # the finished runs are evaluated again, not trained again, to the same figures
    timeseries.main(args)
    again = json.loads((tmp_path / "out" / "results.json").read_text())["records"]
    assert [r["linear_acc_5"] for r in again] == [r["linear_acc_5"] for r in records]
    assert all(r["train_minutes"] < 0.05 for r in again if r["method"] == "byol")
