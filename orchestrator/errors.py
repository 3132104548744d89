"""One root exception for everything a user can cause; the CLI turns it into one line and exit code 2."""

from __future__ import annotations


class OrchestratorError(Exception):
    """A problem with the user's input or environment, reported as one line (exit code 2)."""

    exit_code = 2


class ConfigError(OrchestratorError):
    """Bad configuration: carries the file and the key path of every problem found."""

    def __init__(self, file: str, problems: list[tuple[str, str]]):
        self.file = file
        self.problems = problems
        lines = [f"{file}: {key}: {msg}" if key else f"{file}: {msg}" for key, msg in problems]
        super().__init__("\n".join(lines))


class CheckpointError(OrchestratorError):
    """A weights file that cannot be opened safely or is not a YOLOv5 checkpoint."""


class DataError(OrchestratorError):
    """A dataset definition or file that cannot be used."""


class DownloadError(OrchestratorError):
    """An asset could not be fetched; the message says where to put it by hand."""


class TrainingError(OrchestratorError):
    """Fine-tuning cannot go on (diverged loss, empty data)."""


class DataLost(TrainingError):
    """Images readable at the label scan that cannot be read mid-run (deleted, damaged, their folder gone).

    Exit code 1, as for other faults met while working (2 is for input refused before anything starts)."""

    exit_code = 1


class PruningError(OrchestratorError):
    """A ratio map or pruning request that cannot be applied."""


class UnreachableTarget(PruningError):
    """A GFLOPs or speed-up budget that the scanned cuts cannot reach (a warm start falls back to the uniform cut)."""
