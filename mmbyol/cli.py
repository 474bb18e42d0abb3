"""The command line: ``mmbyol train|eval|views|list|config|data|search|plot|export`` (docs/design.md)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from omegaconf import OmegaConf

from .errors import MMBYOLError, Stopped

log = logging.getLogger("mmbyol")

USAGE = """mmbyol train [modality=NAME] [config=FILE] [key=value ...]
                                                           train; prints the run directory
mmbyol eval RUN_DIR [key=value ...]                        linear probe + kNN -> eval.json, one JSON line
mmbyol views [modality=NAME] [out=FILE] [n=8] [key=value ...]
                                                           augmented view pairs (a picture; text: decoded)
mmbyol list [plugins=[MODULE]]                             registered modalities, encoders, augmentations, data sets
mmbyol config [modality=NAME] [key=value ...]              the resolved config as YAML
mmbyol data prepare NAME [key=value ...]                   build or check a local data set
mmbyol search [modality=NAME] [key=value ...]              find a view pair for the data -> best.yaml + report
mmbyol plot RUN_DIR [out=FILE]                             a run's curves (loss, tau, lr, z-std, rank, monitor)
mmbyol export RUN_DIR format=onnx|torchvision|timm|hf|sentence-transformers [out=DIR]
                                                           the encoder for other tools; prints the folder"""


def _split_options(overrides: list[str], names: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """Pull command options such as ``out=`` out of the config overrides."""
    options, rest = {}, []
    for item in overrides:
        key, _, value = item.partition("=")
        if key in names:
            options[key] = value
        else:
            rest.append(item)
    return options, rest


def cmd_train(args) -> None:
    from .distributed import launched_ranks
    from .train import load_train_config, train

    run_dir = train(load_train_config(args.overrides))
    if launched_ranks().main:  # under torchrun, one line for the whole run
        print(run_dir)


def cmd_eval(args) -> None:
    from .evaluate import evaluate, load_eval_config

    run_dir = Path(args.run_dir)
    result = evaluate(load_eval_config(run_dir, args.overrides), run_dir)
    print(json.dumps({k: v for k, v in result.items() if k != "protocol"}))


def cmd_views(args) -> None:
    from .config import load_config
    from .views import show_views

    options, overrides = _split_options(args.overrides, ("out", "n"))
    n = options.get("n", "8")
    if not n.isdigit() or int(n) < 1:
        raise MMBYOLError(f"n={n!r}: n is the number of items to show, a whole number such as n=8.")
    print(show_views(load_config(overrides), options.get("out"), int(n)))


def cmd_list(args) -> None:
    from .augment import generic_names
    from .config import load_config, preset_names
    from .registry import AUGMENTATIONS, DATASETS, ENCODERS, GENERIC, MODALITIES

    if args.overrides:  # plugins=[...]: a config's plugin modules, imported as training would
        load_config(args.overrides)

    for _, name, origin in MODALITIES.entries():
        modality = MODALITIES.get("", name)
        print(f"modality {name}" + (f" [{origin}]" if origin != "mmbyol" else "") +
              (f" - {modality.description}" if modality.description else ""))
        for registry in (DATASETS, ENCODERS, AUGMENTATIONS):
            entries = [(n, o) for m, n, o in registry.entries() if m == name]
            listed = ", ".join(n + (f" [{o}]" if o != "mmbyol" else "") for n, o in entries)
            print(f"  {registry.kind + 's':<14} {listed or '-'}")
        generic = set(generic_names(name))
        entries = [(n, o) for m, n, o in AUGMENTATIONS.entries() if m == GENERIC and n in generic]
        if entries:
            print(f"  {'+ generic':<14} " + ", ".join(n + (f" [{o}]" if o != "mmbyol" else "") for n, o in entries))
    print("presets (preset=NAME): " + ", ".join(preset_names()))


def cmd_config(args) -> None:
    from .config import load_config

    print(OmegaConf.to_yaml(load_config(args.overrides)), end="")


def cmd_data(args) -> None:
    from .config import load_config
    from .data import build_dataset
    from .registry import DATASETS

    if args.action != "prepare":
        raise MMBYOLError(f"Unknown data action {args.action!r}; the one action is `mmbyol data prepare NAME`.")
    owners = [m for m, name, _ in DATASETS.entries() if name == args.name]
    if not owners:
        names = sorted({name for _, name, _ in DATASETS.entries()})
        raise MMBYOLError(f"Unknown data set {args.name!r}. Available: {', '.join(names)}.")
    cfg = load_config([f"modality={owners[0]}", f"data.name={args.name}", *args.overrides])
    builder = DATASETS.get(cfg.modality, args.name)
    if hasattr(builder, "prepare"):
        builder.prepare(cfg.data)
    sizes = {split: len(build_dataset(cfg, split)) for split in ("train", "test")}
    print(f"{args.name}: ready ({sizes['train']} train, {sizes['test']} test items)")


def cmd_search(args) -> None:
    from .config import load_config
    from .search import search

    print(search(load_config(args.overrides)))


def cmd_plot(args) -> None:
    from .plot import plot_run

    options, rest = _split_options(args.overrides, ("out",))
    if rest:
        raise MMBYOLError(f"plot takes RUN_DIR and out=FILE only; got {' '.join(rest)}.")
    print(plot_run(Path(args.run_dir), options.get("out")))


def cmd_export(args) -> None:
    from .export import FORMATS, export

    options, rest = _split_options(args.overrides, ("format", "out"))
    if rest or "format" not in options:
        raise MMBYOLError(f"export takes RUN_DIR, format=NAME ({'|'.join(FORMATS)}) and out=DIR only"
                          + (f"; got {' '.join(rest)}." if rest else "; format= is missing."))
    print(export(Path(args.run_dir), options["format"], options.get("out")))


SETTINGS_HELP = ("settings, e.g. modality=audio trainer.epochs=5 (values are YAML), or config=FILE; "
                 "`mmbyol config` prints every key with its value")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mmbyol",
        description="BYOL self-supervised learning for images, audio, text, time series and any data a plugin reads.",
        usage=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kwargs) -> argparse.ArgumentParser:  # its usage line names it, not all of USAGE
        return commands.add_parser(name, prog=f"mmbyol {name}", description=kwargs.get("help"), **kwargs)

    p = command("train", help="train BYOL; prints the run directory")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help=SETTINGS_HELP)
    p.set_defaults(run=cmd_train)
    p = command("eval", help="linear probe + kNN of a run's encoder")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the folder `mmbyol train` printed")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help="refinements of the run's config, e.g. eval.labels_per_class=10, or init=random for the "
                        "untrained encoder")
    p.set_defaults(run=cmd_eval)
    p = command("views", help="write a picture of augmented view pairs")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help=SETTINGS_HELP)
    p.set_defaults(run=cmd_views)
    p = command("list", help="list registered modalities, encoders, augmentations, data sets")
    p.add_argument("overrides", nargs="*", default=[], metavar="plugins=[MODULE]")
    p.set_defaults(run=cmd_list)
    p = command("config", help="print the resolved config as YAML")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help=SETTINGS_HELP)
    p.set_defaults(run=cmd_config)
    p = command("data", help="prepare a local data set")
    p.add_argument("action", choices=["prepare"], metavar="prepare")
    p.add_argument("name", metavar="NAME")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help=SETTINGS_HELP)
    p.set_defaults(run=cmd_data)
    p = command("search", help="search the view pair, tau_base and lr for the data (Optuna)")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help=SETTINGS_HELP)
    p.set_defaults(run=cmd_search)
    p = command("plot", help="plot a run's training curves as a PNG")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the folder `mmbyol train` printed")
    p.add_argument("overrides", nargs="*", default=[], metavar="out=FILE")
    p.set_defaults(run=cmd_plot)
    p = command("export", help="export a run's encoder (ONNX, torchvision, timm, Hugging Face)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the folder `mmbyol train` printed")
    p.add_argument("overrides", nargs="*", default=[], metavar="format=NAME [out=DIR]")
    p.set_defaults(run=cmd_export)
    args = parser.parse_args(argv)
    # mmbyol's own lines at INFO; the libraries it drives (the ONNX optimizer, Optuna, transformers) say
    # only what goes wrong: at INFO the ONNX export alone printed dozens of lines of its graph rewrites
    logging.basicConfig(level=logging.WARNING, format="mmbyol: %(message)s", stream=sys.stderr)
    logging.getLogger("mmbyol").setLevel(logging.WARNING if args.quiet else logging.INFO)
    from .runtime import stopped_by_signals

    try:
        with stopped_by_signals():
            args.run(args)
    except MMBYOLError as error:
        print(f"mmbyol: error: {error}", file=sys.stderr)
        return 2
    except Stopped as stopped:  # (a training run after its checkpoint) 128 + the signal, as a process it killed
        print(f"mmbyol: stopped by {signal.Signals(stopped.signum).name}", file=sys.stderr)
        return 128 + stopped.signum
    except KeyboardInterrupt:
        print("mmbyol: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
