import json

import pytest
import torch

from mmbyol.augment import build_augmentation
from mmbyol.checkpoint import load_checkpoint
from mmbyol.config import load_config
from mmbyol.data import build_dataset
from mmbyol.errors import ConfigError, DataError
from mmbyol.modalities.base import build_encoder, get_modality
from mmbyol.modalities.text.frontend import content_mask, decode
from mmbyol.modalities.text.tokenizer import SPECIAL_TOKENS, run_tokenizer, tokenizer_info, train_tokenizer
from mmbyol.registry import AUGMENTATIONS

from ..conftest import cli, train_interrupted

TEXT_AUGMENTATIONS = ["token_mask", "token_delete", "span_crop", "local_shuffle", "dropout"]
TOKEN_AUGMENTATIONS = ["token_mask", "token_delete", "span_crop", "local_shuffle"]  # those that change tokens
CORPUS = [
    "a large dog that hunts by scent", "a small cat kept as a pet", "a tall tree with broad leaves",
    "a flowering plant of dry regions", "a person who writes books", "a person who teaches children",
    "bread made from wheat flour", "a sweet food made with sugar", "a hand tool for driving nails",
    "a vehicle with four wheels", "the act of running fast", "the act of giving something away",
] * 4
TINY_ENCODER = ["encoder.layers=1", "encoder.hidden=32", "encoder.heads=2", "encoder.intermediate=64"]
# Small and fast: a one-layer BERT, tiny heads, a few steps on the corpus above.
TEXT_TINY = [
    "modality=text", "data.name=text-file", "data.batch_size=8", "data.vocab_size=200", "trainer.max_steps=4",
    "trainer.progress=false", "trainer.checkpoint_every=2", "trainer.log_every=2", "model.hidden_dim=64",
    "model.projection_dim=32", "optim.warmup_epochs=0", "device=cpu", *TINY_ENCODER,
]


@pytest.fixture(scope="module")
def info():
    return tokenizer_info(train_tokenizer(CORPUS, vocab_size=200), max_length=16)


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory):
    """train.jsonl and test.jsonl: the corpus above, labelled by topic."""
    root = tmp_path_factory.mktemp("corpus")
    labels = ["animal", "animal", "plant", "plant", "person", "person", "food", "food", "artifact", "artifact",
              "act", "act"]
    for split, rows in (("train", CORPUS), ("test", CORPUS[:12])):
        lines = [json.dumps({"text": t, "label": labels[i % 12]}) for i, t in enumerate(rows)]
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def prepared(info, texts=CORPUS[:8]):
    return get_modality("text").prepare(list(texts), torch.device("cpu"), info)


def assert_valid(batch, info):
    """Every row reads [CLS] tokens… [SEP] [PAD]…, with masks that say so."""
    ids, attention, special = batch["input_ids"], batch["attention_mask"].bool(), batch["special_tokens_mask"]
    tokenizer = run_tokenizer(info)
    cls, sep, pad = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]"), info["pad_token_id"]
    lengths = attention.sum(dim=1)
    for row, length in zip(range(len(ids)), lengths.tolist()):
        assert attention[row, :length].all() and not attention[row, length:].any()  # contiguous
        assert ids[row, 0] == cls and ids[row, length - 1] == sep and (ids[row, length:] == pad).all()
        assert special[row].nonzero().squeeze(1).tolist() == [0, length - 1]
        assert length >= 3  # never emptied: at least one token between [CLS] and [SEP]
        assert not ((ids[row, 1 : length - 1] == cls) | (ids[row, 1 : length - 1] == sep)).any()


# ------------------------------------------------------------------------- tokenizer


def test_a_trained_tokenizer_round_trips_and_is_deterministic(info):
    tokenizer = run_tokenizer(info)
    for sentence in CORPUS[:12]:
        encoding = tokenizer.encode(sentence)
        assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
        assert tokenizer.decode(encoding.ids) == sentence
    vocab = json.loads(info["tokenizer"])["model"]["vocab"]
    ordered = sorted(vocab, key=vocab.get)
    assert ordered[:5] == SPECIAL_TOKENS and ordered[5:] == sorted(ordered[5:])  # canonical ids
    bpe = train_tokenizer(CORPUS, vocab_size=300, model="bpe")
    assert bpe.decode(bpe.encode("a small cat kept as a pet").ids).strip() == "a small cat kept as a pet"


def test_prepare_pads_truncates_and_marks_special_tokens(info):
    batch = prepared(info, ["a dog", " ".join(["a large dog that hunts by scent"] * 5)])
    assert batch["input_ids"].shape == (2, 16)  # truncated to max_length, the short row padded
    assert batch["attention_mask"][0].sum() == 4 and batch["attention_mask"][1].all()
    assert_valid(batch, info)
    assert decode(batch, info)[0] == "a dog"


# ---------------------------------------------------------------------- augmentations


def test_the_token_augmentations_are_registered():
    assert set(TEXT_AUGMENTATIONS) <= set(AUGMENTATIONS.names("text"))


@pytest.mark.parametrize("name", TEXT_AUGMENTATIONS)
def test_p_zero_is_the_identity(name, info):
    batch = prepared(info)
    out = build_augmentation("text", {"name": name, "p": 0.0})(batch, torch.Generator().manual_seed(0))
    for key in ("input_ids", "attention_mask", "special_tokens_mask", "dropout"):
        assert torch.equal(out[key], batch[key])


@pytest.mark.parametrize("name", TOKEN_AUGMENTATIONS)
def test_views_differ_from_the_input_and_each_other_but_stay_valid(name, info):
    batch = prepared(info)
    strong = {"token_mask": {"rate": 0.5}, "token_delete": {"rate": 0.5}, "span_crop": {"scale": [0.3, 0.6]},
              "local_shuffle": {"window": 4}}[name]
    augmentation = build_augmentation("text", {"name": name, **strong})
    generator = torch.Generator().manual_seed(0)
    one, two = augmentation(batch, generator), augmentation(batch, generator)
    assert_valid(one, info)
    assert_valid(two, info)
    assert not torch.equal(one["input_ids"], batch["input_ids"])
    assert not torch.equal(one["input_ids"], two["input_ids"])
    changed = (one["input_ids"] != batch["input_ids"]).any(dim=1)
    assert changed.sum() >= 6  # most rows change: an independent draw per row, not one for the batch


def test_two_rows_of_one_text_get_different_random_parameters(info):
    batch = prepared(info, [CORPUS[0]] * 8)
    for name, options in (("token_mask", {"rate": 0.3}), ("token_delete", {"rate": 0.3}), ("span_crop", {}),
                          ("local_shuffle", {})):
        out = build_augmentation("text", {"name": name, **options})(batch, torch.Generator().manual_seed(1))
        assert len({tuple(row) for row in out["input_ids"].tolist()}) > 1, name


def test_deletion_never_empties_a_sequence(info):
    batch = prepared(info, ["dog", "a cat", *CORPUS[:6]])
    out = build_augmentation("text", {"name": "token_delete", "rate": 0.99})(batch, torch.Generator().manual_seed(0))
    assert_valid(out, info)
    assert (out["attention_mask"].sum(dim=1) == 3).all()  # one token left of each


def test_span_crop_keeps_a_contiguous_run_of_the_tokens(info):
    batch = prepared(info)
    crop = build_augmentation("text", {"name": "span_crop", "scale": [0.4, 0.7]})
    out = crop(batch, torch.Generator().manual_seed(0))
    for original, cropped in zip(decode(batch, info), decode(out, info)):
        assert cropped in original and 0 < len(cropped.split()) < len(original.split())


def test_local_shuffle_moves_no_token_further_than_its_window(info):
    batch = prepared(info, ["a b c d e f g h i j k l m"])  # one token per letter
    for seed in range(5):
        shuffle = build_augmentation("text", {"name": "local_shuffle", "window": 2})
        out = shuffle(batch, torch.Generator().manual_seed(seed))
        before, after = batch["input_ids"][0].tolist(), out["input_ids"][0].tolist()
        assert sorted(before) == sorted(after) and before[0] == after[0] and before[14] == after[14]
        assert all(abs(after.index(token) - i) <= 2 for i, token in enumerate(before))


def test_token_mask_writes_the_mask_token_only_between_special_tokens(info):
    batch = prepared(info)
    out = build_augmentation("text", {"name": "token_mask", "rate": 1.0})(batch, torch.Generator().manual_seed(0))
    content = content_mask(batch)
    assert (out["input_ids"][content] == info["mask_token_id"]).all()
    assert torch.equal(out["input_ids"][~content], batch["input_ids"][~content])
    assert "[MASK]" in decode(out, info)[0]


def test_dropout_is_view_noise_inside_the_encoder(info):
    encoder = build_encoder("text", {"name": "bert", "layers": 1, "hidden": 32, "heads": 2, "intermediate": 64}, info)
    batch = prepared(info)
    view = build_augmentation("text", {"name": "dropout", "rate": 0.3})(batch, torch.Generator().manual_seed(0))
    assert torch.equal(view["input_ids"], batch["input_ids"]) and (view["dropout"] == 0.3).all()
    encoder.train()
    assert torch.equal(encoder(batch), encoder(batch))  # no dropout without the augmentation
    assert not torch.allclose(encoder(view), encoder(view))  # two passes, two dropout masks
    encoder.eval()
    assert torch.equal(encoder(view), encoder(batch))  # evaluation never drops out


# --------------------------------------------------------------------------- encoders


def test_the_encoder_mean_pools_over_real_tokens_only(info):
    options = {"name": "bert", "layers": 1, "hidden": 32, "heads": 2, "intermediate": 64}
    encoder = build_encoder("text", options, info).eval()
    alone = prepared(info, ["a dog"])
    padded = prepared(info, ["a dog", "a large dog that hunts by scent"])
    assert encoder(alone).shape == (1, 32) and encoder.out_dim == 32
    torch.testing.assert_close(encoder(alone)[0], encoder(padded)[0], rtol=1e-5, atol=1e-5)


def pretrained_folder(path, info):
    """A tiny randomly initialized BERT and its tokenizer, saved as Hugging Face files."""
    encoder = build_encoder("text", {"name": "bert", "layers": 1, "hidden": 32, "heads": 2, "intermediate": 64}, info)
    return encoder, encoder.save_pretrained(path)


def test_a_local_pretrained_directory_loads_with_its_tokenizer(tmp_path, info):
    original, folder = pretrained_folder(tmp_path / "tiny-bert", info)
    cfg = load_config(["modality=text", "data.name=text-file", f"data.train={tmp_path / 'x.txt'}",
                       f"data.tokenizer={folder}", f"encoder.pretrained={folder}", "data.max_length=16"])
    (tmp_path / "x.txt").write_text("\n".join(CORPUS))
    loaded_info = build_dataset(cfg, "train").info
    assert loaded_info["vocab_size"] == info["vocab_size"]
    encoder = build_encoder("text", cfg.encoder, loaded_info).eval()
    batch = get_modality("text").prepare(CORPUS[:4], torch.device("cpu"), loaded_info)
    torch.testing.assert_close(encoder(batch), original.eval()(prepared(info, CORPUS[:4])))

    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    tokens = tokenizer(CORPUS[:4], padding=True, return_tensors="pt")
    hidden = model(**tokens).last_hidden_state
    weight = tokens["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close((hidden * weight).sum(1) / weight.sum(1), encoder(batch), rtol=1e-4, atol=1e-4)


def test_a_pretrained_model_with_a_smaller_vocabulary_than_the_tokenizer_is_refused(tmp_path, info):
    _, folder = pretrained_folder(tmp_path / "tiny-bert", info)
    with pytest.raises(ConfigError, match="data.tokenizer="):
        build_encoder("text", {"name": "bert", "pretrained": str(folder)}, {**info, "vocab_size": 10_000})
    with pytest.raises(ConfigError, match="not a folder"):
        build_encoder("text", {"name": "bert", "pretrained": str(tmp_path / "missing")}, info)


# --------------------------------------------------------------------------- data sets


def test_wordnet_glosses_are_balanced_split_and_keep_only_definitions():
    cfg = load_config(["modality=text"])
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert len(train) == 16_000 and len(test) == 4_000 and len(train.classes) == 10
    assert torch.bincount(torch.tensor(test.labels)).tolist() == [400] * 10
    assert not set(train.texts) & set(test.texts)
    assert len(set(train.texts)) == len(train.texts)
    assert not any('"' in t for t in train.texts[:2000])  # quoted examples are cut off
    assert len(set(train.labels[:100])) == 10  # classes interleaved, so data.limit keeps them all
    again = build_dataset(load_config(["modality=text"]), "test")
    assert again.texts == test.texts  # the same split every time


def test_wordnet_without_the_package_names_it(tmp_path):
    with pytest.raises(DataError, match="apt-get install wordnet-base"):
        build_dataset(load_config(["modality=text", f"data.root={tmp_path}"]), "train")


def test_text_files_skip_and_count_empty_and_undecodable_lines(tmp_path, caplog):
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"first line\n\n   \nsecond \xff\xfe line\nthird line\n")
    cfg = load_config(["modality=text", "data.name=text-file", f"data.train={plain}"])
    with caplog.at_level("WARNING"):
        dataset = build_dataset(cfg, "train")
    assert dataset.texts == ["first line", "third line"] and dataset.labels == [-1, -1]
    assert "2 empty at lines 2, 3; 1 undecodable, not UTF-8, at line 4" in caplog.text

    records = tmp_path / "records.jsonl"  # each kind of bad line named with where it is
    records.write_text('{"text": "a cat", "label": "x"}\nnot json\n[1, 2]\n{"label": "y"}\n\n{"text": 5}\n'
                       '{"text": "a dog"}\n')
    caplog.clear()
    with caplog.at_level("WARNING"):
        dataset = build_dataset(load_config(["modality=text", "data.name=text-file", f"data.train={records}"]), "train")
    assert dataset.texts == ["a cat", "a dog"] and dataset.classes == ["x"] and dataset.labels == [0, -1]
    assert ("skipped 1 empty at line 5; 2 broken, not a JSON object, at lines 2, 3; 2 without a string under 'text' "
            "(data.text_column) at lines 4, 6") in caplog.text

    table = tmp_path / "rows.csv"
    table.write_text('text,label\n"a dog, barking",animal\n"",animal\nan oak,plant\n')
    dataset = build_dataset(load_config(["modality=text", "data.name=text-file", f"data.train={table}"]), "train")
    assert dataset.texts == ["a dog, barking", "an oak"] and dataset.classes == ["animal", "plant"]
    assert dataset.labels == [0, 1]


def test_text_file_errors_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="data.train=FILE"):
        build_dataset(load_config(["modality=text", "data.name=text-file"]), "train")
    table = tmp_path / "rows.csv"
    table.write_text("sentence\nhello\n")
    with pytest.raises(DataError, match="data.text_column"):
        build_dataset(load_config(["modality=text", "data.name=text-file", f"data.train={table}"]), "train")
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text('{"text": "a dog", "label": "animal"}\n')
    test.write_text('{"text": "an oak", "label": "plant"}\n')
    cfg = load_config(["modality=text", "data.name=text-file", f"data.train={train}", f"data.test={test}"])
    with pytest.raises(DataError, match="never uses: plant"):
        build_dataset(cfg, "test")
    misspelt = load_config(["modality=text", "data.name=text-file", f"data.train={train}",
                            f"data.test={tmp_path / 'tset.jsonl'}"])
    with pytest.raises(DataError, match="data.test=.*tset.jsonl does not exist"):
        build_dataset(misspelt, "train")  # before training, not when evaluating after it


# ---------------------------------------------------------------------------- training


def test_resume_after_half_the_steps_equals_straight_training(tmp_path, corpus_files, info, monkeypatch):
    """Dropout (the global RNG) and the view generator come back exactly after an interruption."""
    import importlib

    train_module = importlib.import_module("mmbyol.train")
    (tmp_path / "tokenizer.json").write_text(info["tokenizer"])  # one tokenizer for both runs
    options = [*TEXT_TINY, f"data.train={corpus_files / 'train.jsonl'}", "trainer.max_steps=8",
               f"data.tokenizer={tmp_path / 'tokenizer.json'}"]
    straight = train_module.train(load_config([*options, f"run.dir={tmp_path / 'straight'}"]))
    train_interrupted(load_config([*options, f"run.dir={tmp_path / 'resumed'}"]), 7, monkeypatch)  # in epoch 2
    train_module.train(load_config([*options, f"run.dir={tmp_path / 'resumed'}", "resume=auto"]))
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 8 and a["info"]["tokenizer"] == b["info"]["tokenizer"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


@pytest.mark.slow
def test_train_eval_views_and_export_through_the_cli(tmp_path, corpus_files):
    run_dir = tmp_path / "run"
    data = [f"data.train={corpus_files / 'train.jsonl'}", f"data.test={corpus_files / 'test.jsonl'}"]
    result = cli("train", *TEXT_TINY, *data, f"run.dir={run_dir}")
    assert result.stdout.strip() == str(run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert steps and all(r["z_std"] > 0 and r["rank"] > 1 for r in steps)
    metrics = json.loads(cli("eval", str(run_dir), "eval.labels_per_class=2", "eval.l2_grid=[0.01]").stdout
                         .splitlines()[-1])
    assert {"linear_acc", "knn_acc", "linear_acc_2"} <= set(metrics) and metrics["n_test"] == 12

    from mmbyol import load_encoder

    encoder = load_encoder(run_dir)
    batch = get_modality("text").prepare(["a dog"], torch.device("cpu"), encoder.metadata["info"])
    assert encoder(batch).shape == (1, 32)
    assert (encoder.save_pretrained(tmp_path / "hf") / "tokenizer.json").exists()

    out = tmp_path / "views.txt"
    shown = cli("views", *TEXT_TINY, *data, f"out={out}", "n=3").stdout
    assert shown.count("original:") == 3 and shown.count("view 2:") == 3
    assert out.read_text() in shown


def test_a_pretrained_start_takes_its_own_tokenizer_length_and_the_fine_tuning_defaults(tmp_path, info):
    from omegaconf import OmegaConf

    from mmbyol.config import config_dir

    _, folder = pretrained_folder(tmp_path / "tiny-bert", info)
    (tmp_path / "x.txt").write_text("\n".join(CORPUS))
    data = ["modality=text", "data.name=text-file", f"data.train={tmp_path / 'x.txt'}"]
    scratch = load_config(data)
    cfg = load_config([*data, f"encoder.pretrained={folder}"])
    overlay = OmegaConf.load(config_dir() / "modality" / "text.pretrained.yaml")
    assert cfg.data.tokenizer == str(folder) and cfg.data.max_length is None
    assert cfg.optim.lr == overlay.optim.lr != scratch.optim.lr
    assert cfg.trainer.epochs == overlay.trainer.epochs
    assert build_dataset(cfg, "train").info["max_length"] == 16  # the checkpoint's tokenizer_config.json
    # the command line and files still win, and a file can name the checkpoint too
    assert load_config([*data, f"encoder.pretrained={folder}", "optim.lr=0.5"]).optim.lr == 0.5
    (tmp_path / "ft.yaml").write_text(f"encoder:\n  pretrained: {folder}\n")
    assert load_config([*data, f"config={tmp_path / 'ft.yaml'}"]).optim.lr == overlay.optim.lr
    assert load_config([*data, f"config={tmp_path / 'ft.yaml'}", "encoder.pretrained=null"]).optim.lr == \
        scratch.optim.lr
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 12}')
    assert build_dataset(load_config([*data, f"encoder.pretrained={folder}"]), "train").info["max_length"] == 12
    with pytest.raises(DataError, match="set data.max_length=N"):
        _ = build_dataset(load_config([*data, "data.max_length=null"]), "train").info
