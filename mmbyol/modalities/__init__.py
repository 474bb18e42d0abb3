"""Modality plugins: each registers its data sets, encoders and augmentations on import."""
