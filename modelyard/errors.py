"""The error hierarchy a user sees.

Every message is one sentence that names what was wrong and where; stack traces
belong in logs. The parts of the system raise these, the CLI prints them, the HTTP
API answers them with a stable `code` (each class has one; a raise site may name a
more precise one, such as `model_not_found`) and the status its class maps to.
"""


class ModelyardError(Exception):
    """Base of every error whose message is meant for a user."""

    code = "error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class SpecError(ModelyardError):
    """A training spec (or another YAML spec) is malformed."""

    code = "invalid_spec"


class DatasetError(ModelyardError):
    """A dataset cannot be read or fails validation against its spec."""

    code = "dataset_invalid"


class ArchitectureError(ModelyardError):
    """An architecture cannot be built from its spec."""

    code = "invalid_architecture"


class TrainingError(ModelyardError):
    """Training itself failed (diverged, ran out of memory, ...)."""

    code = "training_failed"


class RegistryError(ModelyardError):
    """The model registry refused or failed an operation."""

    code = "registry_error"


class NotFoundError(RegistryError):
    """A registered model, version or alias does not exist."""

    code = "not_found"


class LifecycleError(ModelyardError):
    """An alias change is not allowed (nothing to roll back to, ...)."""

    code = "lifecycle_conflict"


class ConflictError(ModelyardError):
    """What is asked for would duplicate something that exists (409)."""

    code = "conflict"


class InputError(ModelyardError):
    """A request's data does not match what it is sent to (a model's signature, an ingest format)."""

    code = "invalid_input"


class AuthError(ModelyardError):
    """A request carries no valid credential (401)."""

    code = "unauthenticated"


class ForbiddenError(ModelyardError):
    """A valid credential lacks the scope an operation needs (403)."""

    code = "forbidden"


class UnavailableError(ModelyardError):
    """What was asked for exists but cannot answer now (a model still loading, no export yet)."""

    code = "unavailable"


class TransientError(ModelyardError):
    """A service (MLflow, broker, database) failed in a way worth retrying."""

    code = "service_unavailable"
