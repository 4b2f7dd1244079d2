"""FER2013 data: read any supported format into one FerData, validated and cached.

    from fersearch.data import load
    fer = load("data/fer2013.csv")     # or None: data/fer2013.csv, else the synthetic default
"""

from .loader import (DEFAULT_DATA, LABELS, N_PIXELS, SIZE, SPLITS, USAGES, FerData, Log, load, log_stderr,
                     resolve_data_path)

__all__ = ["load", "FerData", "resolve_data_path", "DEFAULT_DATA", "LABELS", "SPLITS", "USAGES", "SIZE", "N_PIXELS",
           "Log", "log_stderr"]
