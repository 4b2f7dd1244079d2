"""Errors a user can fix. Library code raises these; only the CLI turns them into
a one-line message and exit code 1 (no traceback for a user's mistake)."""


class FersearchError(Exception):
    """Base: the message is one line saying what is wrong, where, and what to do."""


class DataError(FersearchError):
    """A data file or folder cannot be read as FER2013."""


class ConfigError(FersearchError):
    """A model/training configuration is invalid (unknown key, bad type, impossible shape)."""


class SpaceError(FersearchError):
    """A search-space file cannot be loaded or proposes invalid configurations."""


class ExperimentError(FersearchError):
    """An experiment directory is missing, clashes with an existing one, or cannot resume."""


class ModelFileError(FersearchError):
    """A file is not a fersearch model (or has been tampered with)."""


class ResourceError(FersearchError):
    """Requested CPUs/GPUs/cluster are not available."""


class ResultsError(FersearchError):
    """The results location cannot take a search: missing, not writable, full, or in use by another search."""


class RecordError(ExperimentError):
    """An experiment's fersearch.json is missing, not a JSON object, or holds a value of the wrong type."""
