"""Datasets: readers of raw formats, preprocessing, and the prepared-dataset format."""
from .dataset import SPLITS, Dataset, Interaction, load_dataset, save_dataset

__all__ = ["SPLITS", "Dataset", "Interaction", "load_dataset", "save_dataset"]
