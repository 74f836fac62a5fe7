"""Training: one LightningModule (and its DataModule) per stage, each given its parts.

The networks they train live in :mod:`thinkjepa.worldmodel` and :mod:`thinkjepa.thinker` and import no
Lightning; a stage takes the parts it trains or reads as constructor arguments (a frozen world model as a
``JEPA`` or the path of its export) and exports its result at the end of ``fit``.

    worldmodel.py    stage 1: WorldModelModule — encoder, EMA target encoder and predictor on image windows
    predictor.py     stage 2: PredictorModule — the predictor on frozen-encoder latents
    distance.py      stage 3: DistanceModule + PoseDistanceDataModule — the goal-distance head (planning cost)
    grounding.py     GroundingPretrainModule + GroundingDataModule — the thinker's VLM learns where words point
    thinker.py       ThinkerModule — the thinker (VLM + LoRA + latent head) against a frozen world model
    windows.py       EpisodeDataModule (frames) and LatentDataModule (cached latents), resumable
    thinker_data.py  ThinkerDataModule — (frame, mission, subgoal frame) samples
    checkpoint_io.py atomic, weights-only Lightning checkpoints

Recipes name these classes by their module path (``thinkjepa.train.worldmodel.WorldModelModule``); run them
with ``thinkjepa fit --config <recipe>``.
"""

from thinkjepa.train.distance import DistanceModule, PoseDistanceDataModule
from thinkjepa.train.grounding import GroundingDataModule, GroundingPretrainModule
from thinkjepa.train.predictor import PredictorModule
from thinkjepa.train.thinker import ThinkerModule
from thinkjepa.train.thinker_data import ThinkerDataModule
from thinkjepa.train.windows import EpisodeDataModule, LatentDataModule
from thinkjepa.train.worldmodel import WorldModelModule

__all__ = [
    "DistanceModule", "EpisodeDataModule", "GroundingDataModule", "GroundingPretrainModule", "LatentDataModule",
    "PoseDistanceDataModule", "PredictorModule", "ThinkerDataModule", "ThinkerModule", "WorldModelModule",
]
