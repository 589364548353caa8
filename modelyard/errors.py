"""The error hierarchy a user sees.

Every message is one sentence that names what was wrong and where; stack traces
belong in logs. The parts of the system raise these, the CLI prints them.
"""


class ModelyardError(Exception):
    """Base of every error whose message is meant for a user."""


class SpecError(ModelyardError):
    """A training spec (or another YAML spec) is malformed."""


class DatasetError(ModelyardError):
    """A dataset cannot be read or fails validation against its spec."""


class ArchitectureError(ModelyardError):
    """An architecture cannot be built from its spec."""


class TrainingError(ModelyardError):
    """Training itself failed (diverged, ran out of memory, ...)."""


class RegistryError(ModelyardError):
    """The model registry refused or failed an operation."""


class NotFoundError(RegistryError):
    """A registered model, version or alias does not exist."""


class LifecycleError(ModelyardError):
    """An alias change is not allowed (nothing to roll back to, ...)."""


class TransientError(ModelyardError):
    """A service (MLflow, broker, database) failed in a way worth retrying."""
