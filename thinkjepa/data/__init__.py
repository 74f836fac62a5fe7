"""Episode data: collection with the BabyAI bot, the on-disk format, and world-model windows."""

from thinkjepa.data.collect import collect, record_episode
from thinkjepa.data.episodes import EpisodeFileError, EpisodeStore
from thinkjepa.data.records import EpisodeMeta, EpisodeRecord, SubgoalSegment, WaypointSegment
from thinkjepa.data.waypoints import AgentState, Waypoint, next_waypoint, path_waypoints, shortest_path
from thinkjepa.data.windows import WindowDataset
from thinkjepa.data.writer import EpisodeWriter

__all__ = [
    "AgentState",
    "EpisodeFileError",
    "EpisodeMeta",
    "EpisodeRecord",
    "EpisodeStore",
    "EpisodeWriter",
    "SubgoalSegment",
    "Waypoint",
    "WaypointSegment",
    "WindowDataset",
    "collect",
    "next_waypoint",
    "path_waypoints",
    "record_episode",
    "shortest_path",
]
