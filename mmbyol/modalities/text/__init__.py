"""Text: sentences as token ids, a BERT-style ``transformers`` encoder with mean pooling, and
token-level augmentations as batched on-device ops.

The data path: a data set item is a string; ``prepare`` tokenizes a batch with the run's
tokenizer (kept in the run's ``info``, so evaluation and exported encoders use the very same
one), pads it to its longest row and moves it to the device as a mapping
``{input_ids, attention_mask, special_tokens_mask, dropout}`` plus the batch constants
``pad_token_id`` and ``mask_token_id``. Every row reads ``[CLS] tokens… [SEP] [PAD]…`` (or the
tokenizer's own special tokens); the augmentations change the tokens between the special ones
and keep that form. ``dropout`` is each row's dropout rate inside the encoder (SimCSE's view
noise), which the ``dropout`` augmentation sets.

The parts: ``data`` (the data sets), ``tokenizer`` (training or loading the run's tokenizer),
``frontend`` (strings → the token batch, and back), ``augment``, ``encoder``. docs/text.md has
the defaults and why.
"""

from __future__ import annotations

from ...registry import register_modality
from ..base import Modality
from . import augment, data, encoder  # noqa: F401  (each registers its parts)
from .data import TextDataConfig
from .frontend import TextFrontEnd, collate_texts, prepare_text, write_text_views

register_modality(Modality(
    name="text",
    data_config=TextDataConfig,
    collate=collate_texts,
    prepare=prepare_text,
    render_views=write_text_views,
    views_file="views.txt",
    front_end=TextFrontEnd,
    description="sentences as token ids (a BERT-style transformers encoder)",
))
