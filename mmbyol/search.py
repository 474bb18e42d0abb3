"""``mmbyol search``: find the view pair (and τ_base, lr) for the user's data with Optuna.

Each trial is a short BYOL run on the training split; its value is the monitor's kNN accuracy
on the validation slice of the training split at the trial's last step (RankMe for unlabelled
data), and the monitor's earlier measurements feed the pruner. The space comes from the
registry: every augmentation of the modality declares the ranges of its options
(``Augmentation.search_space``), and each view's list is chosen from them — each in or out, with
its options — so the two views may differ. Trial 0 is the configured pair, the reference the
others must beat; the untrained encoder (every trial's step 0) is the other.

Short trials can rank recipes differently from full runs (a pair that learns fast may be passed
later), so a final round trains the ``search.finalists`` best recipes and the configured pair
again for ``search.final_steps`` (default twice a trial) and ``best.yaml`` is the best of that round,
except that the configured pair stays unless a finalist leads it by more than ``search.margin``
standard errors of the objective on the slice (the kNN's binomial error; RankMe's spread over
bootstrap resamples of the slice): the search recommends neither a recipe that measured worse nor
one whose lead one draw of the slice could make.

Trials live in an Optuna storage (SQLite in the search directory by default): a search resumes
after a crash with ``resume=auto``, several processes can work on one study, and
``optuna-dashboard sqlite:///RUN_DIR/study.db`` shows it. Results: ``best.yaml``, which
``mmbyol train config=best.yaml`` trains, and ``report.md`` / ``report.json`` / ``report.png``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import socket
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .augment import Augmentation, augmentation_class, augmentation_names
from .checkpoint import atomic_write_text, folder_for_run, refuse_a_folder_of_files
from .config import data_source, describe_data, load_config, to_container
from .data import build_dataset
from .errors import ConfigError, TrainingDiverged
from .metrics import effective_rank_error
from .modalities.base import get_modality
from .monitor import Monitor, monitor_from_config, noise_note, standard_error
from .runtime import autocast_context, resolve_device

log = logging.getLogger("mmbyol.search")

STUDY_NAME = "mmbyol"
FINAL_STUDY_NAME = "mmbyol-final"  # the final round, in the same storage


# ------------------------------------------------------------------------------ the space


def candidates(cfg: DictConfig) -> list[str]:
    """The augmentations that may enter a view, in pipeline order: those of the configured views
    in their order, then the modality's others and the generic ones its batch suits, by name
    (``search.augmentations`` narrows them)."""
    registered = augmentation_names(cfg.modality)
    configured = [spec["name"] for view in ("view1", "view2") for spec in cfg.augment[view]]
    order = list(dict.fromkeys([*configured, *registered]))
    wanted = cfg.search.augmentations
    if wanted is not None:
        unknown = [name for name in wanted if name not in registered]
        if unknown:
            raise ConfigError(f"search.augmentations names {unknown[0]!r}, which is not an augmentation of "
                              f"{cfg.modality}: {', '.join(registered)}.")
        order = [name for name in order if name in wanted]
    return [name for name in order if name in registered]


def base_spec(cfg: DictConfig, view: str, name: str) -> dict[str, Any]:
    """The options an augmentation starts from in ``view``: as configured there (else in the other
    view), else its own defaults; the search then sets the options it declares."""
    for where in (view, "view2" if view == "view1" else "view1"):
        for spec in to_container(cfg.augment)[where]:
            if spec["name"] == name:
                return dict(spec)
    return {"name": name}


def suggest_recipe(trial, cfg: DictConfig, names: list[str]) -> dict[str, Any]:
    """A recipe drawn for ``trial``: each view's augmentations, τ_base and lr."""
    recipe: dict[str, Any] = {}
    for view in ("view1", "view2"):
        specs = []
        for name in names:
            if not trial.suggest_categorical(f"{view}.{name}", [True, False]):
                continue
            spec = base_spec(cfg, view, name)
            cls: type[Augmentation] = augmentation_class(cfg.modality, name)
            for option, space in cls.search_space.items():
                value = space.suggest(trial, f"{view}.{name}.{option}")
                spec[option] = round(value, 4) if isinstance(value, float) else value
            specs.append(spec)
        recipe[view] = specs
    search = cfg.search
    recipe["tau_base"] = (round(trial.suggest_float("tau_base", *search.tau_base), 4) if search.tau_base
                          else cfg.model.tau_base)
    recipe["lr"] = (float(f"{cfg.optim.lr * trial.suggest_float('lr_scale', *search.lr_scale, log=True):.4g}")
                    if search.lr_scale else cfg.optim.lr)
    return recipe


def configured_recipe(cfg: DictConfig) -> dict[str, Any]:
    """The recipe the config itself gives: trial 0, the reference."""
    augment = to_container(cfg.augment)
    return {"view1": augment["view1"], "view2": augment["view2"], "tau_base": cfg.model.tau_base,
            "lr": cfg.optim.lr}


def with_recipe(cfg: DictConfig, recipe: dict[str, Any]) -> DictConfig:
    out = copy.deepcopy(cfg)
    out.augment.view1, out.augment.view2 = recipe["view1"], recipe["view2"]
    out.model.tau_base, out.optim.lr = recipe["tau_base"], recipe["lr"]
    return out


def describe(specs: list[dict[str, Any]]) -> str:
    """A view's list in one line: ``mixup(ratio=0.2) → random_resize_crop(…)``."""
    parts = []
    for spec in specs:
        options = ", ".join(f"{k}={_short(v)}" for k, v in spec.items() if k != "name")
        parts.append(f"{spec['name']}({options})" if options else spec["name"])
    return " → ".join(parts) or "(none)"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


# ------------------------------------------------------------------------------ the study


def search_dir(cfg: DictConfig) -> Path:
    """``run.dir``; else, with ``resume=auto``, the newest search of the modality; else a new one."""
    if cfg.run.dir:
        return folder_for_run(Path(cfg.run.dir))
    if cfg.resume == "auto":
        found = sorted(Path("runs").glob(f"search-{cfg.modality}-*/study.db"), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1].parent
    return Path("runs") / f"search-{cfg.modality}-{datetime.now():%Y%m%d-%H%M%S}"


def storage_url(cfg: DictConfig, where: Path) -> str:
    return cfg.search.storage or f"sqlite:///{(where / 'study.db').resolve()}"


def open_study(cfg: DictConfig, where: Path, steps: int):
    """The study in the storage, created (with trial 0, the configured pair, queued) or joined
    (``resume=auto``), and its final round's study. Trials whose process died stop sending
    heartbeats; once they are stale they are marked failed and queued again, so a crash loses at
    most the trial it cut short."""
    import optuna
    import sqlalchemy
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(cfg, where)
    address = sqlalchemy.engine.make_url(url)
    sqlite = address.get_backend_name() == "sqlite"
    engine = {"connect_args": {"timeout": 60}} if sqlite else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(5):
            try:
                storage = RDBStorage(url, heartbeat_interval=30, grace_period=90, engine_kwargs=engine,
                                     heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
                break
            except sqlalchemy.exc.DBAPIError:  # another process creating the tables or stamping their version
                if attempt == 4:
                    raise
                time.sleep(1 + attempt)
        if sqlite and address.database not in (None, "", ":memory:"):
            _lock_when_a_transaction_begins(storage.engine)  # a file that other processes may share
        pruner = pruner_for(cfg, steps)
        final = optuna.create_study(study_name=FINAL_STUDY_NAME, storage=storage, direction="maximize",
                                    pruner=optuna.pruners.NopPruner(), load_if_exists=True)
        try:
            study = optuna.create_study(study_name=STUDY_NAME, storage=storage, direction="maximize",
                                        pruner=pruner, sampler=_sampler(cfg, cfg.seed))
        except optuna.exceptions.DuplicatedStudyError:
            if cfg.resume != "auto":
                raise ConfigError(f"{url} already holds a search. Continue it (or join it from another process) "
                                  f"with resume=auto, or search into a new run.dir; mmbyol never overwrites a "
                                  f"search.") from None
            study = optuna.load_study(study_name=STUDY_NAME, storage=storage, pruner=pruner)
            # another stream than the first process's, or a resumed search would redraw its trials
            study.sampler = _sampler(cfg, cfg.seed * 1_000_003 + len(study.trials) + os.getpid())
            return study, final, False
    study.set_user_attr("config", to_container(cfg))
    study.enqueue_trial({}, user_attrs={"reference": "configured"})
    return study, final, True


def _lock_when_a_transaction_begins(engine) -> None:
    """Make every transaction on this SQLite engine take the write lock at its start.

    A process claims a queued trial (the configured pair, or a crashed process's trial queued again)
    by reading it as waiting and marking it running in one transaction; Postgres and MySQL lock the
    row (``SELECT ... FOR UPDATE``), SQLite does not, and Python's sqlite3 starts the transaction
    only at the write. Two processes then both read "waiting" and both run the trial. This is
    SQLAlchemy's documented recipe for pysqlite: sqlite3 issues no BEGIN of its own, and each
    transaction starts with ``BEGIN IMMEDIATE`` (another process waits for it, up to the busy
    timeout). The transactions are a few statements long, so the processes barely wait.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(connection, record) -> None:
        connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while the storage was set up lack the hooks


def _sampler(cfg: DictConfig, seed: int):
    import optuna

    startup = min(10, max(3, cfg.search.trials // 4))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True,
                                      constant_liar=True)


def pruner_for(cfg: DictConfig, steps: int):
    """The pruner of ``search.pruner``; neither judges a trial before a third of its steps, as BYOL's
    features often dip before they rise."""
    import optuna

    if cfg.search.pruner == "none":
        return optuna.pruners.NopPruner()
    if cfg.search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=steps // 3)
    return optuna.pruners.HyperbandPruner(min_resource=max(1, steps // 3), max_resource=steps, reduction_factor=3)


def trial_steps(cfg: DictConfig, run_steps: int) -> int:
    """``search.trial_steps``, or a fifth of the configured run."""
    if cfg.search.trial_steps is not None:
        return cfg.search.trial_steps
    return max(1, run_steps // 5)


def final_steps(cfg: DictConfig, steps: int, run_steps: int) -> int:
    """``search.final_steps``, or two trials' length but at most the configured run's: a longer
    final round would leave the trials little of a budget in minutes."""
    if cfg.search.final_steps is not None:
        return cfg.search.final_steps
    return max(steps, min(2 * steps, run_steps))


def objective_key(cfg: DictConfig, monitor: Monitor) -> str:
    wanted = cfg.search.objective
    if wanted == "knn" and not monitor.labelled:
        raise ConfigError("search.objective=knn needs labels, and the training split's validation slice has none "
                          "(or one class). Use search.objective=rank (RankMe), or a labelled data set.")
    if wanted == "rank" or (wanted == "auto" and not monitor.labelled):
        return "monitor_rank"
    return "monitor_knn"


# ------------------------------------------------------------------------------ searching


def search(cfg: DictConfig) -> Path:
    """Run the search as configured; returns its directory, with best.yaml and the report."""
    import optuna

    from .train import train  # the trials' training loop

    where = search_dir(cfg)
    if (where / "study.db").exists() and cfg.resume != "auto" and cfg.search.storage is None:
        raise ConfigError(f"{where} already holds a search. Continue it with resume=auto, or search into a new "
                          f"run.dir; mmbyol never overwrites a search.")
    if where.is_dir() and not any((where / mark).exists() for mark in ("study.db", "trials")):
        refuse_a_folder_of_files(where, "search")  # a folder is a search's once it holds its study or a trial
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    dataset = build_dataset(cfg, "train")
    run_steps = cfg.trainer.max_steps or cfg.trainer.epochs * (len(dataset) // cfg.data.batch_size)
    steps = trial_steps(cfg, run_steps)
    if steps < 2:
        raise ConfigError(f"search.trial_steps={steps}: a trial needs at least 2 steps to be judged.")
    last_steps = final_steps(cfg, steps, run_steps)
    if cfg.search.finalists and last_steps < 2:
        raise ConfigError(f"search.final_steps={last_steps}: a final-round trial needs at least 2 steps, or set "
                          f"search.finalists=0 for no final round.")
    monitor = monitor_from_config(cfg, dataset, get_modality(cfg.modality), dataset.info, device,
                                  autocast_context(cfg.trainer.precision, device))
    where.mkdir(parents=True, exist_ok=True)
    study, final, created = open_study(cfg, where, steps)
    key = objective_key(cfg, monitor)
    names = candidates(cfg)
    study.set_user_attr("objective", key)
    study.set_user_attr("trial_steps", steps)
    study.set_user_attr("slice", {"items": len(monitor.items), "queries": int(monitor.queries.sum())})
    final.set_user_attr("final_steps", last_steps)
    deadline = time.monotonic() + 60 * cfg.search.minutes if cfg.search.minutes else math.inf
    log.info("search %s/%s → %s: %d trials of %d steps (%s%s), %d candidate augmentations: %s",
             cfg.modality, describe_data(cfg), where, cfg.search.trials, steps, key.removeprefix("monitor_"),
             f", {cfg.search.minutes:g} min at most" if cfg.search.minutes else "", len(names), ", ".join(names))
    # a final round as long as the trials would train each finalist again with the same recipe, seed and
    # steps, to the same value: it takes the trials' own measurements (RankMe's error measured in them)
    repeats = last_steps == steps
    if cfg.search.finalists:
        log.info("then a final round: the %d best and the configured pair, %d steps each%s", cfg.search.finalists,
                 last_steps, " (as long as a trial: their trials' measurements are taken)" if repeats else "")
    if not created:
        log.info("continuing the study in %s: %d trials finished", storage_url(cfg, where), _finished(study))

    def run_trial(trial, recipe: dict[str, Any], length: int, run_dir: Path, cut_at: float, prune: bool,
                  noise: bool = False) -> float:
        """Train ``recipe`` for ``length`` steps, reporting the monitor's values to ``trial``; with
        ``noise``, RankMe's standard error at the last step too (``rank_se``; the kNN's, binomial,
        follows from its value)."""
        trial.set_user_attr("recipe", recipe)
        trial.set_user_attr("process", f"{socket.gethostname()}:{os.getpid()}")
        shutil.rmtree(run_dir, ignore_errors=True)  # a retried trial's number is new; this is a leftover
        trial_cfg = with_recipe(cfg, recipe)
        trial_cfg.run.dir, trial_cfg.resume = str(run_dir), None
        trial_cfg.trainer.max_steps = length
        trial_cfg.trainer.monitor_every = max(1, length // cfg.search.measurements)
        trial_cfg.trainer.progress, trial_cfg.trainer.checkpoint_every = False, length
        last: dict[str, float] = {}

        def on_monitor(step: int, measured: dict[str, float]) -> None:
            if "untrained" not in trial.user_attrs and monitor.start is not None:
                trial.set_user_attr("untrained", monitor.start.get(key))
            last.update(measured, step=step)
            trial.report(measured[key], step)
            if step < length and time.monotonic() > cut_at:  # at its last step a trial is whole: keep it
                trial.set_user_attr("cut", "search.minutes")
                raise optuna.TrialPruned(f"search.minutes reached at step {step}")
            if prune and step < length and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

        quiet = logging.getLogger("mmbyol")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # the trials' own lines; the search logs its own
        try:
            train(trial_cfg, dataset=dataset, monitor=monitor, on_monitor=on_monitor)
        except TrainingDiverged as error:
            trial.set_user_attr("diverged", str(error).split(";")[0])
            raise
        finally:
            quiet.setLevel(level)
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            (run_dir / "encoder.safetensors").unlink(missing_ok=True)
        if noise and key == "monitor_rank":
            trial.set_user_attr("rank_se", round(effective_rank_error(monitor.features), 4))
        return last[key]

    def exploring_until() -> float:
        """The deadline less the final round's estimated time (from the configured pair's trial)."""
        if not cfg.search.finalists or deadline == math.inf or repeats:
            return deadline
        timed = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                 if t.user_attrs.get("reference") and t.duration]
        if not timed:
            return deadline
        per_step = timed[0].duration.total_seconds() / steps
        return deadline - 1.1 * (cfg.search.finalists + 1) * last_steps * per_step  # 10% for a trial cut late

    def objective(trial) -> float:
        reference = trial.user_attrs.get("reference")
        recipe = configured_recipe(cfg) if reference else suggest_recipe(trial, cfg, names)
        return run_trial(trial, recipe, steps, where / "trials" / f"{trial.number:04d}", exploring_until(),
                         prune=not reference, noise=repeats)

    bar = _progress(cfg, study)
    stop = optuna.study.MaxTrialsCallback(cfg.search.trials, states=(optuna.trial.TrialState.COMPLETE,
                                                                    optuna.trial.TrialState.PRUNED))

    def after_trial(study, trial) -> None:
        bar.update(1)
        _log_trial(study, trial, key)
        write_report(study, cfg, where, final)
        if time.monotonic() > exploring_until():
            study.stop()

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if _finished(study) < cfg.search.trials and time.monotonic() < exploring_until():
                study.optimize(objective, timeout=60 * cfg.search.minutes if cfg.search.minutes else None,
                               callbacks=[stop, after_trial], catch=(TrainingDiverged,), gc_after_trial=True)
            bar.close()
            if cfg.search.finalists and best_trial(study) is not None:
                final_round(cfg, study, final, last_steps, deadline, run_trial, where, key)
    except KeyboardInterrupt:
        log.warning("interrupted; finished trials are kept. Continue with: mmbyol search run.dir=%s resume=auto",
                    where)
        raise
    finally:
        bar.close()
        if _finished(study):
            write_report(study, cfg, where, final)
    (best, margin), refs = final_choice(cfg, study, final), reference_values(study)
    if best is not None:
        number = best.user_attrs.get("of", best.number)
        in_final = "of" in best.user_attrs
        log.info("best: trial %d%s, %s %.4f%s (untrained encoder %s, configured pair %s) → %s", number,
                 " (the configured pair)" if best.user_attrs.get("reference") else "", key.removeprefix("monitor_"),
                 best.value, f" in the final round, at {best.user_attrs['steps']} steps" if in_final else "",
                 _fmt(refs["untrained"]), _fmt(refs["configured"]), where / "best.yaml")
        held = held_note(cfg, study, final, margin)
        if held:
            log.info(held)
        if below_untrained(best.value, refs, key):
            log.warning("the recipe in best.yaml measured below the untrained encoder on the validation slice %s",
                        _below_untrained_text(best.value, refs, slice_queries(study)))
    return where


BELOW_UNTRAINED_ADVICE = ("With these candidates BYOL made the features worse for these labels: search longer "
                          "(search.trials), offer other augmentations, or weigh the result against `mmbyol eval "
                          "RUN_DIR init=random`.")


def below_untrained(value: float | None, refs: dict[str, Any], key: str) -> bool:
    """Whether a kNN objective's value is below the untrained encoder's (RankMe is no accuracy)."""
    return key == "monitor_knn" and None not in (value, refs["untrained"]) and value < refs["untrained"]


def _below_untrained_text(value: float, refs: dict[str, Any], queries: int | None) -> str:
    """The figures, the advice, and whether the shortfall is within the slice's noise."""
    noise = noise_note(value, refs["untrained"], queries) if queries else ""
    return f"({_fmt(value)} against {_fmt(refs['untrained'])}). {BELOW_UNTRAINED_ADVICE}{noise}"


def finalists(cfg: DictConfig, study) -> list:
    """The configured pair's trial and the ``search.finalists`` best other complete trials."""
    import optuna

    complete = sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                      key=lambda t: -t.value)
    configured = [t for t in complete if t.user_attrs.get("reference")]
    return configured[:1] + [t for t in complete if not t.user_attrs.get("reference")][: cfg.search.finalists]


def final_round(cfg: DictConfig, study, final, length: int, deadline: float, run_trial, where: Path,
                key: str) -> None:
    """Queue the finalists that the final study lacks at ``length`` steps, then train what is queued
    (several processes share the queue; a crashed trial is queued again, as in the exploration)."""
    import optuna

    waiting, running, failed = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING,
                                optuna.trial.TrialState.FAIL)

    def entry(t) -> tuple:
        return t.user_attrs.get("of"), t.user_attrs.get("steps")

    present = {entry(t) for t in final.get_trials(deepcopy=False) if t.state != failed}
    for trial in finalists(cfg, study):  # the reference first: without it the round compares nothing
        if (trial.number, length) not in present:
            final.enqueue_trial({}, user_attrs={"of": trial.number, "steps": length,
                                                "recipe": trial.user_attrs["recipe"],
                                                "reference": trial.user_attrs.get("reference")})

    def objective(trial) -> float:
        if "of" not in trial.user_attrs:  # another process took the last queued one meanwhile
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("nothing left in the final round's queue")
        number, steps = trial.user_attrs["of"], trial.user_attrs["steps"]
        # processes that reach the round together may each queue a finalist: an earlier entry trains it
        twin = next((t.number for t in final.get_trials(deepcopy=False) if t.number < trial.number
                     and t.state != failed and not t.user_attrs.get("surplus") and entry(t) == (number, steps)), None)
        if twin is not None:
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned(f"final trial {twin} trains trial {number} already")
        source = study.trials[number]
        # trained again, the same recipe, seed and steps would give its trial's value
        taken = steps == study.user_attrs["trial_steps"] and (key != "monitor_rank" or "rank_se" in source.user_attrs)
        if taken:
            value = source.value
            trial.set_user_attr("taken_from_trial", True)
            if "rank_se" in source.user_attrs:
                trial.set_user_attr("rank_se", source.user_attrs["rank_se"])
        else:
            value = run_trial(trial, trial.user_attrs["recipe"], steps,
                              where / "final" / f"{number:04d}", deadline, prune=False, noise=True)
        error = trial.user_attrs.get("rank_se")
        log.info("final round: trial %d, %s %.4f%s at %d steps (%.4f at %d%s)", number, key.removeprefix("monitor_"),
                 value, f" ± {error:.4f}" if error is not None else "", steps, source.value,
                 study.user_attrs["trial_steps"], ": its trial's measurement" if taken else "")
        return value

    while time.monotonic() < deadline and final.get_trials(deepcopy=False, states=(waiting,)):
        final.optimize(objective, n_trials=1, catch=(TrainingDiverged,), gc_after_trial=True)
        write_report(study, cfg, where, final)
    if final.get_trials(deepcopy=False, states=(waiting, running)) and time.monotonic() >= deadline:
        log.warning("search.minutes reached during the final round; best.yaml is the best of what it finished")


def final_trials(final, steps: int | None = None) -> list:
    """The final round's complete trials (at ``steps`` steps, when given)."""
    import optuna

    if final is None:
        return []
    return [t for t in final.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if "of" in t.user_attrs and (steps is None or t.user_attrs["steps"] == steps)]


def final_pair(final) -> tuple[Any, Any]:
    """The final round's configured pair and its best other finalist, at the round's length (each
    ``None`` until trained)."""
    done = final_trials(final, final.user_attrs.get("final_steps") if final is not None else None)
    configured = next((t for t in done if t.user_attrs.get("reference")), None)
    challenger = max((t for t in done if not t.user_attrs.get("reference")), key=lambda t: t.value, default=None)
    return configured, challenger


def chosen_trial(study, final, margin: float = 0.0):
    """What best.yaml holds: once the final round has compared the configured pair with another
    finalist, the challenger if it leads the configured pair by more than ``margin``, else the
    configured pair; before, the exploration's best."""
    configured, challenger = final_pair(final)
    if configured is None or challenger is None:
        return best_trial(study)
    return challenger if challenger.value - configured.value > margin else configured


def slice_queries(study) -> int | None:
    """How many queries the study's validation slice asks its kNN (``None`` before it is known)."""
    return (study.user_attrs.get("slice") or {}).get("queries")


def final_margin(cfg: DictConfig, study, final) -> float:
    """The lead a finalist needs over the configured pair: ``search.margin`` standard errors of the
    configured pair's final-round value — for the kNN binomial, on the slice's queries; for RankMe
    its spread over bootstrap resamples of the slice (``rank_se``). 0 while the error is unknown
    (a study from before errors were kept)."""
    configured, _ = final_pair(final)
    if configured is None:
        return 0.0
    if objective_of(study) == "monitor_knn":
        queries = slice_queries(study)
        return cfg.search.margin * standard_error(configured.value, queries) if queries else 0.0
    error = configured.user_attrs.get("rank_se")
    return cfg.search.margin * error if error is not None else 0.0


def margin_text(key: str, margin: float, times: float, measured: dict[str, Any]) -> str:
    """The margin in words: its size and what it is ``times`` standard errors of."""
    if key == "monitor_knn":
        return f"{_amount(key, margin)}, {times:g} standard errors of a kNN on {measured.get('queries')} queries"
    return (f"{_amount(key, margin)}, {times:g} standard errors of RankMe over bootstrap resamples of the slice's "
            f"{measured.get('items')} items")


def _amount(key: str, value: float) -> str:
    """A difference of the objective in its units: points of accuracy for the kNN, RankMe as it is."""
    return f"{100 * value:.1f} points" if key == "monitor_knn" else f"{value:.2f}"


def objective_of(study) -> str:
    """The study's objective key (``monitor_knn`` for a study that predates the attribute)."""
    return study.user_attrs.get("objective", "monitor_knn")


def final_choice(cfg: DictConfig, study, final) -> tuple[Any, float]:
    """What best.yaml holds (:func:`chosen_trial`) and the margin it was chosen with (:func:`final_margin`)."""
    margin = final_margin(cfg, study, final)
    return chosen_trial(study, final, margin), margin


def held_note(cfg: DictConfig, study, final, margin: float) -> str:
    """When the configured pair keeps best.yaml though a finalist led it, by how much and against
    what margin; else nothing."""
    configured, challenger = final_pair(final)
    if configured is None or challenger is None or not 0 < challenger.value - configured.value <= margin:
        return ""
    key = objective_of(study)
    return (f"trial {challenger.user_attrs['of']} led the configured pair by "
            f"{_amount(key, challenger.value - configured.value)} in the final round, within search.margin: "
            f"{margin_text(key, margin, cfg.search.margin, study.user_attrs.get('slice') or {})}. "
            f"best.yaml keeps the configured pair: the lead could be one draw of the slice.")


def _finished(study) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def _progress(cfg: DictConfig, study):
    from tqdm import tqdm

    return tqdm(total=cfg.search.trials, initial=min(_finished(study), cfg.search.trials), desc="mmbyol search",
                unit="trial", disable=not cfg.trainer.progress, dynamic_ncols=True)


def _last_value(trial) -> tuple[float | None, int | None]:
    """A finished trial's value, or a pruned one's last intermediate value; and its last step."""
    last_step = max(trial.intermediate_values) if trial.intermediate_values else None
    if trial.value is not None:
        return trial.value, last_step
    return (trial.intermediate_values[last_step] if last_step is not None else None), last_step


def _log_trial(study, trial, key: str) -> None:
    recipe = trial.user_attrs.get("recipe", {})
    value, _ = _last_value(trial)
    log.info("trial %d %s: %s %s (τ_base %s, lr %s) | view 1: %s | view 2: %s", trial.number, trial.state.name.lower(),
             key.removeprefix("monitor_"), _fmt(value), recipe.get("tau_base"), recipe.get("lr"),
             describe(recipe.get("view1", [])), describe(recipe.get("view2", [])))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


# ------------------------------------------------------------------------------ the results


def best_trial(study):
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value, default=None)


def reference_values(study) -> dict[str, float | None]:
    """The untrained encoder's value (every trial's step 0) and the configured pair's (trial 0)."""
    untrained = next((t.user_attrs["untrained"] for t in study.trials if "untrained" in t.user_attrs), None)
    configured = next((t.value for t in study.trials
                       if t.user_attrs.get("reference") and t.value is not None), None)
    return {"untrained": untrained, "configured": configured}


def best_config(cfg: DictConfig, recipe: dict[str, Any]) -> dict[str, Any]:
    """``best.yaml``: what the recipe and the search's own settings (data, encoder, …) change from
    the modality's defaults, for ``mmbyol train config=best.yaml`` at the configured budget."""
    found = to_container(with_recipe(cfg, recipe))
    defaults = to_container(load_config([f"modality={cfg.modality}", f"plugins={list(cfg.plugins)}"]))
    out: dict[str, Any] = {"modality": cfg.modality}
    if cfg.plugins:
        out["plugins"] = list(cfg.plugins)
    found["trainer"]["progress"] = defaults["trainer"]["progress"]  # how a run shows itself is not the recipe
    # the data searched on is named even where it is the default: the file says what it was found for
    data = _changed(found["data"], defaults["data"])
    out["data"] = {**data_source(cfg), **({} if data is _SAME else data)}
    for section in ("seed", "encoder", "model", "optim", "trainer"):
        changed = _changed(found[section], defaults[section])
        if changed is not _SAME:
            out[section] = changed
    out["augment"] = {"view1": recipe["view1"], "view2": recipe["view2"]}
    for key in ("local_views", "local"):  # multi-crop is not searched: kept as configured
        if found["augment"][key] != defaults["augment"][key]:
            out["augment"][key] = found["augment"][key]
    return out


_SAME = object()


def _changed(value: Any, default: Any) -> Any:
    """What of ``value`` differs from ``default``: the whole value, the differing keys of a
    mapping, or ``_SAME``."""
    if isinstance(value, dict) and isinstance(default, dict):
        out = {}
        for k, v in value.items():
            changed = _changed(v, default[k]) if k in default else v
            if changed is not _SAME:
                out[k] = changed
        return out or _SAME
    return _SAME if value == default else value


def write_report(study, cfg: DictConfig, where: Path, final=None) -> None:
    """``best.yaml``, ``report.json``, ``report.md`` and ``report.png`` from the study (and its
    final round) as it stands."""
    import optuna

    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    key = objective_of(study)
    refs = reference_values(study)
    best, margin = final_choice(cfg, study, final)
    final_steps = final.user_attrs.get("final_steps") if final is not None else None
    finals = sorted(({"trial": t.user_attrs["of"], "value": t.value, "steps": t.user_attrs["steps"],
                      "reference": t.user_attrs.get("reference"), "rank_se": t.user_attrs.get("rank_se"),
                      "seconds": (t.duration.total_seconds() if t.duration else None)}
                     for t in final_trials(final, final_steps)), key=lambda r: -r["value"])
    rows = []
    for t in trials:
        value, last_step = _last_value(t)
        recipe = t.user_attrs.get("recipe", {})
        rows.append({"trial": t.number, "state": t.state.name.lower(), "value": value, "steps": last_step,
                     "reference": t.user_attrs.get("reference"), "tau_base": recipe.get("tau_base"),
                     "lr": recipe.get("lr"), "view1": recipe.get("view1"), "view2": recipe.get("view2"),
                     "seconds": (t.duration.total_seconds() if t.duration else None)})
    complete = [r for r in rows if r["state"] == "complete"]
    ranked = sorted(complete, key=lambda r: -r["value"]) + [r for r in rows if r["state"] != "complete"]
    importances = {}
    if len(complete) >= 3:
        try:
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importances = {k: round(v, 3) for k, v in
                               optuna.importance.get_param_importances(study, evaluator=evaluator).items()}
        except (ValueError, RuntimeError) as error:  # too few trials sharing parameters
            log.debug("no parameter importances yet: %s", error)
    report = {"objective": key, "trial_steps": study.user_attrs.get("trial_steps"), "references": refs,
              "slice": study.user_attrs.get("slice"),
              "best_value": best.value if best else None,
              "below_untrained": below_untrained(best.value if best else None, refs, key),
              "best": best.user_attrs.get("of", best.number) if best else None, "importances": importances,
              "trials": ranked, "final_steps": final_steps, "final": finals, "margin": margin}
    atomic_write_text(where / "report.json", json.dumps(report, indent=1) + "\n")
    if best is not None:
        what = key.removeprefix("monitor_")
        held = held_note(cfg, study, final, margin)
        if "of" in best.user_attrs:  # chosen in the final round
            configured = next((r["value"] for r in finals if r["reference"]), None)
            found = (f"{what} {best.value:.4f} on the validation slice after {best.user_attrs['steps']} steps"
                     + (": the configured pair, kept in the final round" if best.user_attrs.get("reference")
                        else f", the best of the final round (configured pair {_fmt(configured)})"))
        else:
            found = (f"{what} {best.value:.4f} on the validation slice (untrained encoder {_fmt(refs['untrained'])}, "
                     f"configured pair {_fmt(refs['configured'])})")
        text = (f"# Found by mmbyol search: {found}.\n" + (f"# {held}\n" if held else "")
                + f"# Train it: mmbyol train config={where / 'best.yaml'}\n")
        text += OmegaConf.to_yaml(OmegaConf.create(best_config(cfg, best.user_attrs["recipe"])))
        atomic_write_text(where / "best.yaml", text)
    atomic_write_text(where / "report.md", _markdown(cfg, report))
    plot_search(report, where / "report.png")


def _markdown(cfg: DictConfig, report: dict[str, Any]) -> str:
    what = report["objective"].removeprefix("monitor_")
    refs = report["references"]
    measured = report["slice"] or {"items": cfg.trainer.monitor_items}
    queries = (f", {measured['queries']} of them queries of the kNN, whose accuracy has a standard error of up to "
               f"{100 * standard_error(0.5, measured['queries']):.1f} points: differences between trials smaller than "
               f"about twice that may be one draw of the slice"
               if what == "knn" and "queries" in measured else "")
    lines = [f"# mmbyol search: {cfg.modality} / {describe_data(cfg)}", "",
             f"Objective: {'kNN accuracy' if what == 'knn' else 'RankMe'} on the validation slice "
             f"({measured['items']} training items{queries}; the test split is never read) after "
             f"{report['trial_steps']} BYOL steps. Higher is better.", "",
             "| reference | value |", "|---|---|",
             f"| untrained encoder (step 0) | {_fmt(refs['untrained'])} |",
             f"| configured pair (trial 0) | {_fmt(refs['configured'])} |"]
    top = next((r for r in report["trials"] if r["state"] == "complete"), None)  # ranked: the best first
    if top is not None:
        lines.append(f"| best trial (trial {top['trial']}) | {_fmt(top['value'])} |")
    if report.get("below_untrained"):
        lines += ["", f"**The recipe in best.yaml (trial {report['best']}) measured below the untrained encoder** "
                  + _below_untrained_text(report["best_value"], refs, measured.get("queries"))]
    if report["final"]:
        why = ("This round is as long as the trials, so each finalist's value is its trial's (trained again, the "
               "same recipe, seed and steps give the same)." if report["final_steps"] == report["trial_steps"] else
               "Short trials can rank recipes otherwise than longer training does, so the best trials and the "
               "configured pair are trained again for longer.")
        lines += ["", f"## Final round: {report['final_steps']} steps each", "",
                  why + " best.yaml is the best of this round, but a finalist "
                  "replaces the configured pair only with a lead of more than search.margin"
                  + (f" ({margin_text(report['objective'], report['margin'], cfg.search.margin, measured)})"
                     if report.get("margin") else "") + ".", "",
                  "| trial | value | value in its trial | seconds |", "|---|---|---|---|"]
        short = {r["trial"]: r["value"] for r in report["trials"]}
        for r in report["final"]:
            name = f"{r['trial']}" + (" (configured)" if r["reference"] else "") + \
                (" → best.yaml" if r["trial"] == report["best"] else "")
            error = f" ± {r['rank_se']:.4f}" if r.get("rank_se") is not None else ""
            lines.append(f"| {name} | {_fmt(r['value'])}{error} | {_fmt(short.get(r['trial']))} | "
                         f"{r['seconds'] and round(r['seconds'])} |")
    lines += ["", "## Trials, best first", "",
              "| trial | state | value | steps | τ_base | lr | view 1 | view 2 |", "|---|---|---|---|---|---|---|---|"]
    for r in report["trials"]:
        name = f"{r['trial']}" + (" (configured)" if r["reference"] else "")
        lines.append(f"| {name} | {r['state']} | {_fmt(r['value'])} | {r['steps'] or '-'} | {r['tau_base']} | "
                     f"{r['lr']} | {describe(r['view1'] or [])} | {describe(r['view2'] or [])} |")
    if report["importances"]:
        lines += ["", "## Parameter importances (PED-ANOVA)", "", "| parameter | importance |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in report["importances"].items()]
    lines += ["", "![trials](report.png)", ""]
    return "\n".join(lines)


def plot_search(report: dict[str, Any], path: Path) -> None:
    """Each trial's value (pruned ones at their last measurement), the best so far, and the two
    reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plot import save_png

    rows = sorted((r for r in report["trials"] if r["value"] is not None), key=lambda r: r["trial"])
    fig, ax = plt.subplots(figsize=(7, 4.6), dpi=120)
    done = [r for r in rows if r["state"] == "complete"]
    cut = [r for r in rows if r["state"] != "complete"]
    ax.scatter([r["trial"] for r in done], [r["value"] for r in done], color="tab:blue", label="complete", zorder=3)
    ax.scatter([r["trial"] for r in cut], [r["value"] for r in cut], color="tab:gray", marker="x",
               label="pruned (last measurement)", zorder=3)
    best, xs, ys = -math.inf, [], []
    for r in done:
        best = max(best, r["value"])
        xs.append(r["trial"])
        ys.append(best)
    if xs and rows[-1]["trial"] > xs[-1]:  # the best so far holds to the last trial, pruned or not
        xs.append(rows[-1]["trial"])
        ys.append(best)
    ax.step(xs, ys, where="post", color="tab:blue", alpha=0.5, label="best so far")
    if report.get("final"):
        ax.scatter([r["trial"] for r in report["final"]], [r["value"] for r in report["final"]], color="tab:orange",
                   marker="*", s=120, label=f"final round ({report['final_steps']} steps)", zorder=4)
    refs = report["references"]
    for name, color in (("untrained", "tab:red"), ("configured", "tab:green")):
        if refs[name] is not None:
            ax.axhline(refs[name], color=color, linestyle="--",
                       label="untrained encoder" if name == "untrained" else "configured pair (trial 0)")
    ax.set_xlabel("trial")
    ax.set_ylabel(report["objective"].removeprefix("monitor_"))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3)  # below: never over a point
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)  # several processes may write the report
