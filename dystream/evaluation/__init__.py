"""Evaluation of motion predictors on a data split (``dystream evaluate``)."""

from dystream.evaluation.core import THRESHOLDS, Predictor, evaluate, evaluate_many
from dystream.evaluation.predictors import (generator_predictor, ground_truth_predictor,
                                            rms_baseline_predictor)

__all__ = ["evaluate", "evaluate_many", "Predictor", "THRESHOLDS", "ground_truth_predictor",
           "rms_baseline_predictor", "generator_predictor"]
