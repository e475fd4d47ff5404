"""Prediction: batched generation -> decode -> boxes in original pixels."""

from vlmdet.predict.predictor import Prediction, Predictor, evaluate_predictions

__all__ = ["Prediction", "Predictor", "evaluate_predictions"]
