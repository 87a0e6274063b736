"""fedcore.runtime: run configs, the main job, metrics and plots."""

from .config import RunConfig, config_from_dict, load_config

__all__ = ["RunConfig", "config_from_dict", "load_config"]
