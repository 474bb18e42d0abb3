"""mmbyol search: the space from the registry, trials through the CLI, resume and several processes."""

import contextlib
import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time

import optuna
import pytest
import sqlalchemy
import yaml

import mmbyol.search as search_module
from mmbyol.config import describe_data, load_config
from mmbyol.errors import ConfigError
from mmbyol.search import best_config, candidates, configured_recipe, final_steps, suggest_recipe, with_recipe

from .conftest import TINY, cli

SEARCH = [*(o for o in TINY if not o.startswith("trainer.max_steps")), "trainer.monitor_items=128",
          "search.trial_steps=4", "search.measurements=2"]

PLUGIN = '''
from mmbyol.augment import Augmentation, Float, Int
from mmbyol.registry import register_augmentation


@register_augmentation("image", "searchable_erase")
class SearchableErase(Augmentation):
    """Zero a square of side ``size`` at a random place (a plugin's augmentation)."""

    search_space = {"size": Int(2, 12), "p": Float(0.1, 0.9)}

    def __init__(self, size: int = 8, p: float = 0.5):
        super().__init__(p)
        self.size = size

    def apply(self, x, generator):
        import torch

        n, _, height, width = x.shape
        top = int(torch.randint(height - self.size + 1, (1,), generator=generator, device=x.device))
        left = int(torch.randint(width - self.size + 1, (1,), generator=generator, device=x.device))
        out = x.clone()
        out[..., top : top + self.size, left : left + self.size] = 0
        return out
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "searchable_erase.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    return "searchable_erase"


def test_a_plugins_declared_ranges_enter_the_search_space(plugin):
    cfg = load_config([f"plugins=[{plugin}]"])
    names = candidates(cfg)
    # the configured views' augmentations first, in their order, then the others
    assert names[:6] == ["random_resized_crop", "horizontal_flip", "color_jitter", "grayscale", "gaussian_blur",
                         "solarize"]
    assert "searchable_erase" in names
    assert "crop_resize" in names and "time_warp" not in names  # generic ones the image batch suits
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        recipe = suggest_recipe(trial, cfg, names)
        for view in ("view1", "view2"):
            for spec in recipe[view]:
                if spec["name"] == "searchable_erase":
                    assert 2 <= spec["size"] <= 12 and 0.1 <= spec["p"] <= 0.9
                    seen.add(view)
        assert 0.4 <= recipe["tau_base"] <= 0.99 and 0.3 * cfg.optim.lr <= recipe["lr"] <= 3 * cfg.optim.lr
        assert set(trial.params) >= {"view1.searchable_erase", "view2.searchable_erase", "tau_base", "lr_scale"}
        study.tell(trial, 0.0)
    assert seen == {"view1", "view2"}  # each view draws its own list
    only = load_config([f"plugins=[{plugin}]", "search.augmentations=[searchable_erase, horizontal_flip]"])
    assert candidates(only) == ["horizontal_flip", "searchable_erase"]


def test_best_yaml_trains_the_recipe_it_was_found_with(tmp_path):
    cfg = load_config(["modality=audio", "data.label=voice", "data.snr_db=null", "trainer.epochs=3"])
    recipe = {**configured_recipe(cfg), "view2": [{"name": "gain", "gain": 0.3, "p": 0.5}], "tau_base": 0.8,
              "lr": 0.002}
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(best_config(cfg, recipe)))
    loaded = load_config([f"config={path}"])
    assert loaded == with_recipe(cfg, recipe)
    written = yaml.safe_load(path.read_text())
    assert written["data"] == {"name": "spoken-digits", "label": "voice", "snr_db": None} and "search" not in written
    assert set(written["augment"]) == {"view1", "view2"}  # the local views, not searched, are the defaults'
    # local views the search trained with but the defaults lack are written, so best.yaml trains them too
    local = load_config(["modality=audio", "augment.local_views=2", "augment.local=[{name: crop_resize, size: 0.5}]"])
    path.write_text(yaml.safe_dump(best_config(local, recipe)))
    assert load_config([f"config={path}"]) == with_recipe(local, recipe)


def test_best_yaml_names_the_data_it_was_searched_on_even_the_default_set(tmp_path):
    cfg = load_config(["modality=timeseries"])
    written = best_config(cfg, configured_recipe(cfg))
    assert list(written)[:2] == ["modality", "data"] and written["data"] == {"name": "ucr", "set": "JapaneseVowels"}
    own = load_config(["modality=timeseries", "data.name=array-file", "data.train=a.npz", "data.test=b.npz"])
    assert best_config(own, configured_recipe(own))["data"] == {"name": "array-file", "train": "a.npz", "test": "b.npz"}
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(written))
    assert load_config([f"config={path}", "data.set=GunPoint"]).data.set == "GunPoint"  # the pair on other data
    assert describe_data(cfg) == "ucr (set=JapaneseVowels)"  # report.md's title and the logs
    assert describe_data(own) == "array-file (train=a.npz test=b.npz)"
    assert describe_data(load_config([])) == "fashion-mnist"


def test_a_search_starts_in_no_folder_of_the_users(tmp_path):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "report.md").write_text("my report")  # a name the search's report has
    for resume in ("null", "auto"):
        with pytest.raises(ConfigError, match=r"holds files that are not a search's \(report.md\).*project/search"):
            search_module.search(load_config([f"run.dir={mine}", f"resume={resume}"]))
    assert [p.name for p in mine.iterdir()] == ["report.md"] and (mine / "report.md").read_text() == "my report"


def test_the_final_round_is_twice_a_trial_unless_told_and_never_longer_than_the_run():
    cfg = load_config([])
    assert final_steps(cfg, 10, 100) == 20 and final_steps(cfg, 10, 15) == 15 and final_steps(cfg, 10, 4) == 10
    assert final_steps(load_config(["search.final_steps=7"]), 10, 100) == 7


def test_best_yaml_takes_the_final_round_only_once_it_has_compared_the_configured_pair_with_a_challenger():
    from mmbyol.search import chosen_trial

    def trial(value, **attrs):
        return optuna.trial.create_trial(value=value, user_attrs=attrs)

    study, final = optuna.create_study(direction="maximize"), optuna.create_study(direction="maximize")
    study.add_trial(trial(0.5, reference="configured"))
    study.add_trial(trial(0.7))
    final.set_user_attr("final_steps", 20)
    assert chosen_trial(study, final).value == 0.7  # no final round yet: the best trial
    final.add_trial(trial(0.9, of=0, steps=20, reference="configured"))
    assert chosen_trial(study, final).value == 0.7  # the reference alone compares nothing
    final.add_trial(trial(0.8, of=1, steps=20))
    chosen = chosen_trial(study, final)
    assert chosen.value == 0.9 and chosen.user_attrs["reference"] == "configured"  # the longer run decides
    final.set_user_attr("final_steps", 30)
    assert chosen_trial(study, final).value == 0.7  # a round at another length is not compared with this one


def test_a_finalist_replaces_the_configured_pair_only_with_a_lead_beyond_the_slices_noise():
    from mmbyol.search import chosen_trial, final_margin, held_note

    def trial(value, **attrs):
        return optuna.trial.create_trial(value=value, user_attrs=attrs)

    study, final = optuna.create_study(direction="maximize"), optuna.create_study(direction="maximize")
    study.set_user_attr("slice", {"items": 200, "queries": 100})
    study.add_trial(trial(0.5, reference="configured"))
    study.add_trial(trial(0.7))
    final.set_user_attr("final_steps", 20)
    final.add_trial(trial(0.5, of=0, steps=20, reference="configured"))
    final.add_trial(trial(0.58, of=1, steps=20))
    cfg = load_config([])
    margin = final_margin(cfg, study, final)
    assert margin == pytest.approx(2 * math.sqrt(0.5 * 0.5 / 100))  # 10 points: two errors of 5 on 100 queries
    assert chosen_trial(study, final, margin).user_attrs["reference"] == "configured"  # 8 points: within
    assert held_note(cfg, study, final, margin) == (
        "trial 1 led the configured pair by 8.0 points in the final round, within search.margin: 10.0 points, 2 "
        "standard errors of a kNN on 100 queries. best.yaml keeps the configured pair: the lead could be one draw of "
        "the slice.")
    assert chosen_trial(study, final, final_margin(load_config(["search.margin=0"]), study, final)).value == 0.58
    final.add_trial(trial(0.61, of=2, steps=20))
    assert chosen_trial(study, final, margin).value == 0.61 and held_note(cfg, study, final, margin) == ""
    with pytest.raises(ConfigError, match="search.margin must be 0 or more"):
        load_config(["search.margin=-1"])


def test_a_rankme_finalist_needs_a_lead_beyond_rankmes_bootstrap_error():
    from mmbyol.search import chosen_trial, final_margin, held_note

    def trial(value, **attrs):
        return optuna.trial.create_trial(value=value, user_attrs=attrs)

    study, final = optuna.create_study(direction="maximize"), optuna.create_study(direction="maximize")
    study.set_user_attr("objective", "monitor_rank")
    study.set_user_attr("slice", {"items": 140})
    study.add_trial(trial(3.5, reference="configured"))
    study.add_trial(trial(3.8))
    final.set_user_attr("final_steps", 20)
    final.add_trial(trial(3.5, of=0, steps=20, reference="configured"))
    final.add_trial(trial(3.9, of=1, steps=20, rank_se=0.7))
    cfg = load_config([])
    assert final_margin(cfg, study, final) == 0.0  # the configured pair's error unknown: any lead, as before
    final = optuna.create_study(direction="maximize")
    final.set_user_attr("final_steps", 20)
    final.add_trial(trial(3.5, of=0, steps=20, reference="configured", rank_se=0.3))
    final.add_trial(trial(3.9, of=1, steps=20, rank_se=0.7))
    margin = final_margin(cfg, study, final)
    assert margin == pytest.approx(0.6)  # two of the configured pair's errors, not the challenger's
    assert chosen_trial(study, final, margin).user_attrs["reference"] == "configured"
    assert held_note(cfg, study, final, margin) == (
        "trial 1 led the configured pair by 0.40 in the final round, within search.margin: 0.60, 2 standard errors "
        "of RankMe over bootstrap resamples of the slice's 140 items. best.yaml keeps the configured pair: the lead "
        "could be one draw of the slice.")
    assert final_margin(load_config(["search.margin=0"]), study, final) == 0.0
    final.add_trial(trial(4.2, of=2, steps=20, rank_se=0.4))
    assert chosen_trial(study, final, margin).value == 4.2 and held_note(cfg, study, final, margin) == ""


@pytest.mark.parametrize("challenger, kept", [(0.58, True), (0.70, False)])
def test_best_yaml_says_whether_the_final_round_kept_the_configured_pair(tmp_path, challenger, kept):
    cfg = load_config([])
    recipe = configured_recipe(cfg)
    study, final = optuna.create_study(direction="maximize"), optuna.create_study(direction="maximize")
    study.set_user_attr("slice", {"items": 200, "queries": 100})
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"recipe": recipe, "reference": "configured"}))
    study.add_trial(optuna.trial.create_trial(value=0.7, user_attrs={"recipe": recipe}))
    final.set_user_attr("final_steps", 20)
    final.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"of": 0, "steps": 20, "recipe": recipe,
                                                                     "reference": "configured"}))
    final.add_trial(optuna.trial.create_trial(value=challenger, user_attrs={"of": 1, "steps": 20, "recipe": recipe}))
    search_module.write_report(study, cfg, tmp_path, final)
    header = [line for line in (tmp_path / "best.yaml").read_text().splitlines() if line.startswith("#")]
    if kept:  # 8 points on 100 queries: within the margin of 10
        assert header[0] == ("# Found by mmbyol search: knn 0.5000 on the validation slice after 20 steps: the "
                             "configured pair, kept in the final round.")
        assert header[1].startswith("# trial 1 led the configured pair by 8.0 points in the final round")
    else:
        assert header[0] == ("# Found by mmbyol search: knn 0.7000 on the validation slice after 20 steps, the best "
                             "of the final round (configured pair 0.5000).")
        assert header[1].startswith("# Train it: mmbyol train config=")
    assert json.loads((tmp_path / "report.json").read_text())["best"] == (0 if kept else 1)


@pytest.mark.parametrize("best, below", [(0.60, True), (0.64, False), (0.70, False)])
def test_the_report_says_when_the_recipe_found_measured_below_the_untrained_encoder(tmp_path, best, below):
    cfg = load_config([])
    recipe = configured_recipe(cfg)
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("objective", "monitor_knn")
    study.set_user_attr("trial_steps", 10)
    study.set_user_attr("slice", {"items": 50, "queries": 25})
    study.add_trial(optuna.trial.create_trial(value=0.52, intermediate_values={10: 0.52},
                                              user_attrs={"recipe": recipe, "reference": "configured",
                                                          "untrained": 0.64}))
    study.add_trial(optuna.trial.create_trial(value=best, intermediate_values={10: best},
                                              user_attrs={"recipe": recipe}))
    search_module.write_report(study, cfg, tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["best"] == 1 and report["below_untrained"] is below
    text = (tmp_path / "report.md").read_text()
    assert "50 training items, 25 of them queries of the kNN, whose accuracy has a standard error of up to 10.0" in text
    assert ("measured below the untrained encoder** (0.6000 against 0.6400)" in text) is below
    # 25 queries at 64%: a standard error of 9.6 points, so 4 points short may be noise, and 34 may not
    assert ("4.0 points, is under two standard errors of a kNN on 25 queries (9.6 points each)" in text) is below
    assert "may be noise" not in search_module._below_untrained_text(0.30, {"untrained": 0.64}, 25)


def test_a_finalist_queued_by_two_processes_at_once_trains_once(tmp_path):
    from mmbyol.search import final_round

    cfg = load_config(["search.finalists=1"])
    recipe = configured_recipe(cfg)
    study, final = optuna.create_study(direction="maximize"), optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"reference": "configured", "recipe": recipe}))
    study.add_trial(optuna.trial.create_trial(value=0.7, user_attrs={"recipe": recipe}))
    study.set_user_attr("trial_steps", 10)
    for _ in range(2):  # two processes found the final round's queue empty and queued both finalists
        for number in (0, 1):
            final.enqueue_trial({}, user_attrs={"of": number, "steps": 20, "recipe": recipe})
    trained = []

    def run_trial(trial, recipe, length, run_dir, cut_at, prune, noise=False):
        assert noise and not prune  # a finalist's value is weighed against its error, never pruned
        trained.append((trial.user_attrs["of"], length))
        return 0.6

    final_round(cfg, study, final, 20, math.inf, run_trial, tmp_path, "monitor_knn")
    assert sorted(trained) == [(0, 20), (1, 20)]
    surplus = [t.number for t in final.trials if t.user_attrs.get("surplus")]
    assert surplus == [2, 3] and all(final.trials[n].state == optuna.trial.TrialState.PRUNED for n in surplus)

    # the entry that trained it crashed (failed) after its twin stood down: the entry queued again trains it
    again, trained[:] = optuna.create_study(direction="maximize"), []
    attrs = {"of": 1, "steps": 20, "recipe": recipe}
    failed, pruned = optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED
    again.add_trial(optuna.trial.create_trial(state=failed, user_attrs=attrs))
    again.add_trial(optuna.trial.create_trial(state=pruned, user_attrs={**attrs, "surplus": True}))
    again.enqueue_trial({}, user_attrs=attrs)
    final_round(cfg, study, again, 20, math.inf, run_trial, tmp_path, "monitor_knn")
    assert sorted(trained) == [(0, 20), (1, 20)]


@pytest.mark.slow
def test_search_end_to_end_through_the_cli(tmp_path, fashion_mnist, plugin):
    where = tmp_path / "search"
    args = [*SEARCH, f"run.dir={where}", f"plugins=[{plugin}]", "search.finalists=2", "search.final_steps=12"]
    result = cli("search", *args, "search.trials=3")  # as a process in the two-process test below
    assert result.stdout.strip() == str(where)
    report = json.loads((where / "report.json").read_text())
    assert len(report["trials"]) == 3 and report["objective"] == "monitor_knn"
    assert report["trials"][-1]["state"] in ("complete", "pruned")
    configured = [t for t in report["trials"] if t["reference"] == "configured"]
    assert len(configured) == 1 and configured[0]["trial"] == 0  # trial 0: the configured pair
    assert 0 <= report["references"]["untrained"] <= 1 and report["references"]["configured"] is not None
    assert (where / "report.png").exists() and "| trial | state |" in (where / "report.md").read_text()
    # the final round: the configured pair and the two best other complete trials, again for 12 steps
    others = [t for t in report["trials"] if t["state"] == "complete" and t["trial"] != 0]
    assert report["final_steps"] == 12
    assert {f["trial"] for f in report["final"]} == {t["trial"] for t in others[:2]} | {0}
    assert all(f["steps"] == 12 for f in report["final"]) and "## Final round: 12 steps each" in \
        (where / "report.md").read_text()
    chosen = max(report["final"], key=lambda f: f["value"])
    assert report["best"] == chosen["trial"]
    best = yaml.safe_load((where / "best.yaml").read_text())
    recipe = next(t for t in report["trials"] if t["trial"] == chosen["trial"])
    assert best["modality"] == "image" and best["augment"] == {"view1": recipe["view1"], "view2": recipe["view2"]}
    run = tmp_path / "best-run"
    cli("train", f"config={where / 'best.yaml'}", "trainer.max_steps=2", f"run.dir={run}")
    trained = yaml.safe_load((run / "config.yaml").read_text())["augment"]
    assert trained == {**best["augment"], "local_views": 0, "local": []}  # image has no local views by default
    for command in ("eval", "plot"):  # the search folder taken for a run: told what to do with it
        mistaken = cli(command, str(where), check=False)
        assert mistaken.returncode == 2 and f"mmbyol train config={where / 'best.yaml'}" in mistaken.stderr

    refused = cli("search", *args, "search.trials=4", check=False)  # a finished search is not extended by accident
    assert refused.returncode == 2 and "resume=auto" in refused.stderr
    cli("search", *args, "search.trials=4", "resume=auto")  # one more trial, the first three kept
    again = json.loads((where / "report.json").read_text())
    assert sorted(t["trial"] for t in again["trials"]) == [0, 1, 2, 3]
    kept = {t["trial"]: t["value"] for t in report["trials"]}
    assert all(kept[t["trial"]] == t["value"] for t in again["trials"] if t["trial"] in kept)
    finals = {f["trial"]: f["value"] for f in report["final"]}  # the final round too: only a new finalist trains
    assert all(finals[f["trial"]] == f["value"] for f in again["final"] if f["trial"] in finals)
    ranked = [t["trial"] for t in again["trials"] if t["state"] == "complete" and t["trial"] != 0]
    assert {f["trial"] for f in again["final"]} == set(finals) | set(ranked[:2])


def test_a_final_round_as_long_as_the_trials_takes_their_measurements_instead_of_training_them_again(
        tmp_path, fashion_mnist, monkeypatch):
    import importlib

    train_module = importlib.import_module("mmbyol.train")
    trained = []
    real_train = train_module.train

    def counted(cfg, **kwargs):
        trained.append(cfg.run.dir)
        return real_train(cfg, **kwargs)

    monkeypatch.setattr(train_module, "train", counted)
    where = tmp_path / "search"
    search_module.search(load_config([*SEARCH, f"run.dir={where}", "search.trials=2", "search.final_steps=4",
                                      "search.pruner=none"]))
    assert len(trained) == 2 and all("/trials/" in run for run in trained)  # the final round trained nothing
    report = json.loads((where / "report.json").read_text())
    values = {t["trial"]: t["value"] for t in report["trials"]}
    assert len(report["final"]) == 2 and all(f["value"] == values[f["trial"]] for f in report["final"])
    assert "This round is as long as the trials" in (where / "report.md").read_text()


def test_a_search_without_labels_judges_by_rankme_and_weighs_its_final_round_by_rankmes_error(tmp_path, fashion_mnist):
    where = tmp_path / "search"
    cli("search", *SEARCH, f"run.dir={where}", "search.objective=rank", "search.trials=2", "search.final_steps=4")
    report = json.loads((where / "report.json").read_text())
    assert report["objective"] == "monitor_rank" and len(report["final"]) == 2
    assert all(f["rank_se"] > 0 for f in report["final"])  # each finalist's error on the slice's 128 items
    configured = next(f for f in report["final"] if f["reference"])
    challenger = next(f for f in report["final"] if not f["reference"])
    assert report["margin"] == pytest.approx(2 * configured["rank_se"])  # search.margin=2 of the configured pair's
    won = challenger["value"] - configured["value"] > report["margin"]
    assert report["best"] == (challenger if won else configured)["trial"]
    assert f"{configured['value']:.4f} ± {configured['rank_se']:.4f}" in (where / "report.md").read_text()
    assert ("2 standard errors of RankMe over bootstrap resamples of the slice's 128 items" in
            (where / "report.md").read_text())


def _study(where):
    return optuna.load_study(study_name="mmbyol", storage=f"sqlite:///{where / 'study.db'}")


def _search_process(where, *extra):
    return subprocess.Popen([sys.executable, "-m", "mmbyol", "search", *SEARCH, f"run.dir={where}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_during_a_trial(victim, where, other, within: float = 300) -> None:
    """SIGKILL ``victim`` while it runs a trial of the study in ``where``, once some trial has finished."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if victim.poll() is not None:
            other.kill()
            pytest.fail(f"the process to kill ended first (exit {victim.returncode}):\n{victim.stderr.read()[-2000:]}"
                        f"\nthe other process (exit {other.wait()}):\n{other.stderr.read()[-2000:]}")
        time.sleep(0.1)
        if not (where / "study.db").exists():
            continue
        try:
            trials = _study(where).get_trials(deepcopy=False)
        except (KeyError, sqlalchemy.exc.DBAPIError):  # the file is there, its tables or the study not yet
            continue
        mine = f":{victim.pid}"
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        if any(t.state.is_finished() for t in trials) and any(t.user_attrs.get("process", "").endswith(mine)
                                                              for t in running):
            victim.kill()
            victim.wait()
            return
    pytest.fail(f"the process to kill ran no trial in {within} s")


def test_a_process_joining_while_another_sets_up_the_storage_retries_instead_of_failing(tmp_path, monkeypatch):
    # two processes starting at once race on the schema: one of them sees a table or the schema's version
    # row appear under it (sqlite: "table studies already exists", "UNIQUE constraint failed: alembic_version")
    setup = optuna.storages.RDBStorage.__init__
    raised = []

    def racing(storage, *args, **kwargs):
        if len(raised) < 2:
            raised.append(len(raised))
            error = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError)[len(raised) - 1]
            raise error("INSERT INTO alembic_version", {}, Exception("the other process was first"))
        setup(storage, *args, **kwargs)

    monkeypatch.setattr(optuna.storages.RDBStorage, "__init__", racing)
    monkeypatch.setattr(search_module.time, "sleep", lambda seconds: None)
    study, _, created = search_module.open_study(load_config(["resume=auto"]), tmp_path, steps=8)
    assert raised == [0, 1] and created and study.trials[0].user_attrs == {"reference": "configured"}


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the test claims with ask(), a search in optimize()
def test_two_processes_never_claim_the_same_queued_trial(tmp_path, monkeypatch):
    # a process claims a queued trial by reading it as waiting and then marking it running; SQLite has no
    # SELECT ... FOR UPDATE, so unless the read takes the write lock, both processes read "waiting" and both run
    # the trial, in one directory, and the one that finishes second crashes
    from optuna.storages._rdb import models

    cfg = load_config(["resume=auto"])
    first, _, _ = search_module.open_study(cfg, tmp_path, steps=8)
    second, _, _ = search_module.open_study(cfg, tmp_path, steps=8)
    read, both_read = models.TrialModel.find_or_raise_by_id, threading.Barrier(2)

    def read_then_wait(trial_id, session, for_update=False):
        trial = read(trial_id, session, for_update=for_update)
        if for_update:  # let the other claim read too, if it can: it cannot while this one holds the lock
            with contextlib.suppress(threading.BrokenBarrierError):
                both_read.wait(timeout=1)
        return trial

    monkeypatch.setattr(models.TrialModel, "find_or_raise_by_id", staticmethod(read_then_wait))
    claimed = []
    claims = [threading.Thread(target=lambda study=study: claimed.append(study.ask().number))
              for study in (first, second)]
    for claim in claims:
        claim.start()
    for claim in claims:
        claim.join(timeout=60)
    assert sorted(claimed) == [0, 1]  # one runs the queued configured pair, the other a trial of its own


def test_a_search_in_memory_opens_its_study(tmp_path):
    # no other process shares an in-memory database: it is left as SQLAlchemy makes it
    study, _, created = search_module.open_study(load_config(["search.storage=sqlite://"]), tmp_path, steps=8)
    assert created and study.trials[0].user_attrs == {"reference": "configured"}


@pytest.mark.slow
def test_two_processes_share_a_study_and_a_killed_one_loses_no_finished_trial(tmp_path, fashion_mnist):
    where = tmp_path / "search"
    args = ["search.trial_steps=12", "search.measurements=2", "search.finalists=0", "resume=auto"]
    survivor = _search_process(where, "search.trials=5", *args)
    victim = _search_process(where, "search.trials=5", *args)
    try:
        _kill_during_a_trial(victim, where, survivor)
        before = {t.number: (t.state, t.value) for t in _study(where).get_trials() if t.state.is_finished()}
        _, err = survivor.communicate(timeout=600)
    finally:
        for process in (survivor, victim):
            process.kill()
    assert survivor.returncode == 0, err[-2000:]
    # the survivor finished the study's trials; the killed process's trial is left running (stale)
    trials = _study(where).get_trials()
    finished = [t for t in trials if t.state.is_finished()]
    assert len(finished) >= 5 and sum(t.state == optuna.trial.TrialState.RUNNING for t in trials) <= 1
    workers = {t.user_attrs["process"].rsplit(":", 1)[1] for t in trials if "process" in t.user_attrs}
    assert workers == {str(survivor.pid), str(victim.pid)}  # both worked on the one study

    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)  # what search.trials counts
    done = sum(t.state in counted for t in trials)
    cli("search", *SEARCH, f"run.dir={where}", f"search.trials={done + 1}", *args)  # resume: one more trial
    after = _study(where).get_trials()
    assert sum(t.state in counted for t in after) == done + 1
    for number, (state, value) in before.items():  # finished trials are kept, never run again
        assert (after[number].state, after[number].value) == (state, value)
    # the configured pair is queued once (a copy replaces it only if it was the killed trial and went stale)
    assert sum(t.user_attrs.get("reference") == "configured" and t.state != optuna.trial.TrialState.FAIL
               for t in after) == 1
