"""fersearch.json: the experiment record, one frozen, typed object with one loader and one writer.

    record = load_record(exp_dir)        # every old folder's defaults applied here, and only here
    record.settings.grace_period         # None settings: a folder not written by `fersearch tune`
    save_record(exp_dir, record)         # atomic; the JSON keeps the layout it always had

The JSON layout is flat at the top for the search's settings (name, seed, trials, max_epochs,
grace_period, reduction_factor, scheduler, sampler, objectives, metric, mode), with blocks for
the data, the noise inputs, the space, the study, the options as given, the resources planned,
the versions, each resume and the MLflow parent run. Older folders lack some keys (objectives,
noise, metric, resumed, mlflow): `load_record` fills them in; a key of the wrong type is a
one-line RecordError naming the file and the key. Keys this version does not know are kept as
they are (`extra`) and written back.

The types live in record_types.py, the reading of the JSON (old formats, type checks) in
record_reader.py; every name is imported from here.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import RecordError
from ..io import read_json, write_json
from .record_reader import NotAnExperiment, record_from_json
from .record_types import (
    CHECKPOINT_EVERY,
    EXPERIMENT_STATE_GLOB,
    META_FILE,
    DataRecord,
    ExperimentRecord,
    JSONObject,
    Mlflow,
    Noise,
    Resume,
    Settings,
    SpaceRecord,
    Z,
    default_grace_period,
)

__all__ = ["CHECKPOINT_EVERY", "EXPERIMENT_STATE_GLOB", "META_FILE", "Z", "DataRecord", "ExperimentRecord",
           "JSONObject", "Mlflow", "NotAnExperiment", "Noise", "RecordError", "Resume", "Settings", "SpaceRecord",
           "default_grace_period", "load_record", "record_from_json", "save_record"]


def load_record(exp: str | os.PathLike) -> ExperimentRecord:
    """An experiment's fersearch.json as an ExperimentRecord. Every default an older folder needs is
    applied here; a file that is missing, not a JSON object, or holds a key of the wrong type is one
    RecordError line naming the file and what is wrong."""
    path = Path(exp) / META_FILE
    try:
        raw = read_json(path)
    except FileNotFoundError:
        raise RecordError(f"{path} not found; is {exp} a fersearch experiment?") from None
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError; RecursionError: [[[[...
        raise RecordError(f"{path} is not valid JSON ({str(e).splitlines()[0]}); the experiment record is "
                          "damaged") from None
    except OSError as e:
        raise RecordError(f"{path} cannot be read ({e.strerror or e}); check its permissions") from None
    return record_from_json(raw, path)


def save_record(exp: str | os.PathLike, record: ExperimentRecord) -> None:
    """Write fersearch.json atomically (a reader never sees half a record)."""
    write_json(Path(exp) / META_FILE, record.to_json())
