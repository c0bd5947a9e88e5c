"""deepfm 0.1's ``deepfm.synth_settings``, kept for one release: its names now live in deepfm.data.synth_settings."""

from deepfm._deprecated import deprecated_module

deprecated_module(__name__, "deepfm.data.synth_settings")

from deepfm.data.synth_settings import SETTINGS, SynthSetting, get_setting

__all__ = ["SETTINGS", "SynthSetting", "get_setting"]
