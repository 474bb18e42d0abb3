"""The ``spoken-digits`` data set: the words zero..nine synthesized by espeak-ng in 8 English
accents and 5 voices, mixed with noise when read; labelled by word (split by accent) or by
voice (split by word)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile

from ...errors import DataError
from ...registry import register_dataset
from ...runtime import InterruptFlag
from .data import AudioClips, AudioDataConfig, load_audio

log = logging.getLogger(__name__)


DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ACCENTS = ["en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
VOICE_VARIANTS = ["m1", "m3", "m7", "f2", "f4"]
SPEEDS = [120, 145, 170, 195, 220]  # words per minute
PITCHES = [20, 35, 50, 65, 80]  # espeak-ng's 0-99 scale
SPOKEN_DIGITS_VERSION = 1


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmbyol"


def _spoken_digits_root(cfg: AudioDataConfig) -> Path:
    return Path(cfg.root) if cfg.root else default_cache() / "spoken-digits"


def _manifest(root: Path) -> dict | None:
    """The manifest of a spoken-digits set in ``root``, of any version (a JSON object with its
    version and sample rate), or None where there is none."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and {"version", "sample_rate"} <= manifest.keys() else None


def _only_a_set(root: Path) -> bool:
    """Whether ``root`` holds nothing but a set's accent folders, its manifest and hidden files."""
    return all(p.is_dir() or p.name == "manifest.json" or p.name.startswith(".") for p in root.iterdir())


def _synthesize(job: tuple[str, str, int, int, str, Path], sample_rate: int) -> None:
    accent, variant, speed, pitch, word, out = job
    with tempfile.NamedTemporaryFile(suffix=".wav") as raw:
        subprocess.run(["espeak-ng", "-v", f"{accent}+{variant}", "-s", str(speed), "-p", str(pitch),
                        "-w", raw.name, word], check=True, capture_output=True)
        wave = load_audio(raw.name, sample_rate)
    soundfile.write(str(out), wave.numpy(), sample_rate, subtype="PCM_16")


def prepare_spoken_digits(cfg: AudioDataConfig) -> Path:
    """Synthesize the words zero..nine with espeak-ng: 8 accents × 5 voice variants × 5 speeds ×
    5 pitches = 10,000 clean clips at ``data.sample_rate``, into ``data.root`` (default
    ``~/.cache/mmbyol/spoken-digits``). Deterministic; written to a temporary folder and renamed,
    so an interrupted preparation leaves nothing half-made. Noise is mixed in when read."""
    root = _spoken_digits_root(cfg)
    manifest = _manifest(root)
    if manifest is not None and manifest["version"] == SPOKEN_DIGITS_VERSION:
        return root
    if root.exists() and not root.is_dir():
        raise DataError(f"data.root={root} is a file; spoken-digits is made in a folder. Choose a new or empty one.")
    if root.is_dir() and any(root.iterdir()) and not (manifest is not None and _only_a_set(root)):  # replaced whole
        raise DataError(f"data.root={root} holds files that are no spoken-digits set (it has no manifest.json of "
                        f"one), and making the set would replace them. For your own recordings set "
                        f"data.name=audio-folder; for spoken-digits choose a new or empty folder, or leave data.root "
                        f"unset ({default_cache() / 'spoken-digits'}).")
    if shutil.which("espeak-ng") is None:
        raise DataError("spoken-digits is synthesized with espeak-ng, which is not installed. Install it with "
                        "`apt-get install espeak-ng` (`make data` in a clone does), then run "
                        "`mmbyol data prepare spoken-digits`; or train on your own files with "
                        "data.name=audio-folder data.root=DIR.")
    from tqdm import tqdm

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    jobs = []
    for accent in ACCENTS:
        for word in DIGITS:
            (staging / accent / word).mkdir(parents=True)
            for variant in VOICE_VARIANTS:
                for speed in SPEEDS:
                    for pitch in PITCHES:
                        jobs.append((accent, variant, speed, pitch, word,
                                     staging / accent / word / f"{variant}-s{speed}-p{pitch}.wav"))
    log.info("synthesizing %d spoken digits with espeak-ng into %s", len(jobs), root)
    try:
        pool = ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1))
        try:
            with InterruptFlag("stopping; the clips begun are finished, the others not made") as stop:
                futures = [pool.submit(_synthesize, job, cfg.sample_rate) for job in jobs]
                for future in tqdm(futures, desc="spoken-digits", mininterval=2.0,
                                   disable=not log.isEnabledFor(logging.INFO)):
                    _wait_for(future, stop)
        except subprocess.CalledProcessError as error:
            raise DataError(
                f"espeak-ng failed ({' '.join(error.cmd)}): {error.stderr.decode(errors='replace')[:300]}. "
                f"Check that the espeak-ng install is complete (apt-get install --reinstall "
                f"espeak-ng espeak-ng-data)."
            ) from None
        finally:  # stopped or failed: the clips not yet begun are not made
            pool.shutdown(cancel_futures=True)
        (staging / "manifest.json").write_text(json.dumps({
            "version": SPOKEN_DIGITS_VERSION, "sample_rate": cfg.sample_rate, "clips": len(jobs), "words": DIGITS,
            "accents": ACCENTS, "variants": VOICE_VARIANTS, "speeds": SPEEDS, "pitches": PITCHES,
        }, indent=1))
        if root.exists():
            shutil.rmtree(root)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _wait_for(future, stop: InterruptFlag) -> None:
    """Wait for a clip, looking for a stop twice a second; raises the clip's error or the stop."""
    while True:
        stop.raise_if_requested()
        try:
            return future.result(timeout=0.5)
        except TimeoutError:
            continue


def unvoiced_accents(root: Path) -> list[str]:
    """The accents whose voice variants are not told apart: the same word, speed and pitch give one
    and the same clip in two or more variants. espeak-ng 1.51 ignores the variant for ``en-gb``,
    so there every "voice" is one voice and cannot label a clip."""
    found = []
    for accent in ACCENTS:
        folder = root / accent / DIGITS[0]
        by_variant = {v: sorted(p.name.split("-", 1)[1] for p in folder.glob(f"{v}-*.wav")) for v in VOICE_VARIANTS}
        shared = set.intersection(*(set(names) for names in by_variant.values()))
        if not shared:
            continue
        name = min(shared)
        digests = {hashlib.sha256((folder / f"{v}-{name}").read_bytes()).hexdigest() for v in VOICE_VARIANTS}
        if len(digests) < len(VOICE_VARIANTS):
            found.append(accent)
    return found


@register_dataset("audio", "spoken-digits")
def spoken_digits(cfg: AudioDataConfig, split: str) -> AudioClips:
    """The words zero..nine spoken by espeak-ng in 8 English accents, mixed with coloured noise
    (``data.snr_db``). With ``data.label=word`` a clip's class is its word, and train and test
    are split by accent: ``data.test_accents`` never appear in training. With ``data.label=voice``
    its class is the voice variant (m1, m3, m7, f2, f4), and they are split by word:
    ``data.test_words`` are never heard in training; an accent whose variants are one voice
    (:func:`unvoiced_accents`) is left out. Prepared on first use
    (``mmbyol data prepare spoken-digits``)."""
    if cfg.label == "word":
        test, allowed, what = cfg.test_accents, ACCENTS, "test_accents"
    elif cfg.label == "voice":
        test, allowed, what = cfg.test_words, DIGITS, "test_words"
    else:
        raise DataError(f"data.label must be word or voice (what a spoken digit is labelled by); got {cfg.label!r}.")
    unknown = sorted(set(test) - set(allowed))
    if unknown or not test or len(set(test)) == len(allowed):
        raise DataError(f"data.{what} must name some, not all, of {', '.join(allowed)}; got {list(test)}.")
    root = prepare_spoken_digits(cfg)
    keep = [a for a in allowed if (a in test) == (split == "test")]
    accents = ACCENTS
    if cfg.label == "voice":
        unvoiced = unvoiced_accents(root)
        if unvoiced:
            log.info("spoken-digits: left out of data.label=voice, whose voice variants are one voice: %s",
                     ", ".join(unvoiced))
        accents = [a for a in ACCENTS if a not in unvoiced]
    files, labels, groups = [], [], []
    for accent in accents:
        for digit, word in enumerate(DIGITS):
            split_by = accent if cfg.label == "word" else word
            if split_by not in keep:
                continue
            found = sorted((root / accent / word).glob("*.wav"))
            files += found
            labels += [digit if cfg.label == "word" else VOICE_VARIANTS.index(f.name.split("-")[0]) for f in found]
            groups += [split_by] * len(found)  # what the test split holds out, the monitor holds out too
    classes = DIGITS if cfg.label == "word" else VOICE_VARIANTS
    return AudioClips(files, labels, classes, cfg, split == "train", root, cfg.snr_db, cfg.noise_colour,
                      cfg.noise_per_view, cfg.view_snr_db, groups)


spoken_digits.prepare = prepare_spoken_digits
