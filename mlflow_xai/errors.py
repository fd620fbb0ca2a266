"""Exceptions raised to users. Each message says what is wrong and what to do next."""

from __future__ import annotations


class XaiError(Exception):
    """Base class for every error mlflow-xai raises on purpose."""


class InvalidInputError(XaiError, ValueError):
    """The data, targets or background cannot be explained as given."""


class ConfigError(XaiError, ValueError):
    """An unknown option, method name or parameter, or a bad value for one."""


class ModelPredictError(XaiError, RuntimeError):
    """The model raised while being evaluated."""


class PluginError(XaiError, RuntimeError):
    """Plugins conflict (for example two packs register the same method name)."""


class DeviceError(XaiError, RuntimeError):
    """A device was requested that this machine does not have."""


class ExplainTimeout(XaiError, TimeoutError):
    """The explanation did not finish within ``timeout`` seconds; its worker was stopped."""


class ExplainCancelled(XaiError):
    """The explanation was cancelled (its ``cancel`` event was set); its worker was stopped."""


class RecordingError(XaiError):
    """The explanation was computed but could not be recorded completely."""
