"""Datasets: readers of raw formats, preprocessing, and the prepared-dataset format."""
from .bear_csv import prepare_bear_csv
from .dataset import SPLITS, Dataset, Interaction, dataset_fingerprint, load_dataset, save_dataset
from .movielens import fetch_movielens_100k, prepare_movielens_100k
from .prepare import FETCHERS, FORMATS, fetch, prepare
from .preprocess import prepare_interactions
from .raw_logs import prepare_amazon, prepare_recbole
from .stats import format_stats

__all__ = ["FETCHERS", "FORMATS", "fetch", "SPLITS", "Dataset", "Interaction", "dataset_fingerprint",
           "fetch_movielens_100k", "format_stats", "load_dataset", "prepare", "prepare_amazon", "prepare_bear_csv",
           "prepare_interactions", "prepare_movielens_100k", "prepare_recbole", "save_dataset"]
