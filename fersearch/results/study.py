"""The search's Optuna study in the experiment folder (study.journal), opened for reading.

search/study.py makes the study (Ray's OptunaSearch writes it); the report reads it back
here: an Optuna JournalStorage file, named after the experiment. No Ray.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ExperimentError
from .record import ExperimentRecord, load_record

if TYPE_CHECKING:
    import optuna

STUDY_FILE = "study.journal"


def storage(exp_dir: str | os.PathLike) -> optuna.storages.JournalStorage:
    """The experiment's Optuna storage: a JournalStorage on <exp_dir>/study.journal (created if missing)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    # Absolute: Ray pickles the searcher with its storage, and a resumed search may run from another cwd.
    return JournalStorage(JournalFileBackend(str(Path(exp_dir).resolve() / STUDY_FILE)))


def study_name(record_or_name: ExperimentRecord | str) -> str:
    """The study's name: the experiment's name (from its record, or given)."""
    return record_or_name if isinstance(record_or_name, str) else record_or_name.name


def load_study(exp_dir: str | os.PathLike) -> optuna.Study | None:
    """The experiment's optuna.Study, or None when it has no study.journal (searches before
    the study was kept)."""
    import optuna

    exp_dir = Path(exp_dir)
    path = exp_dir / STUDY_FILE
    if not path.is_file():
        return None
    name = study_name(load_record(exp_dir))
    try:
        return optuna.load_study(study_name=name, storage=storage(exp_dir))
    except KeyError:
        raise ExperimentError(f"{path} holds no study named {name!r}; the file is damaged or not this "
                              "experiment's") from None
    except (ValueError, TypeError, AttributeError, IndexError, UnicodeDecodeError, optuna.exceptions.OptunaError) as e:
        raise ExperimentError(f"{path} cannot be read as an Optuna journal ({str(e).splitlines()[0][:120]}); "
                              "the file is damaged") from None


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna logs every study and trial at INFO; fersearch reports progress itself."""
    import optuna

    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(old)
