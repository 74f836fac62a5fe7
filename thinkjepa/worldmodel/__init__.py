"""The action-conditioned JEPA world model."""

from thinkjepa.worldmodel.encoder import EncoderConfig, ViTEncoder
from thinkjepa.worldmodel.export import fingerprint, load_world_model, save_world_model
from thinkjepa.worldmodel.jepa import JEPA, ObjectiveConfig
from thinkjepa.worldmodel.predictor import MLPPredictor, PredictorConfig
from thinkjepa.worldmodel.regularizers import SIGReg, VICReg

__all__ = [
    "JEPA", "EncoderConfig", "MLPPredictor", "ObjectiveConfig", "PredictorConfig", "SIGReg", "VICReg",
    "ViTEncoder", "fingerprint", "load_world_model", "save_world_model",
]
