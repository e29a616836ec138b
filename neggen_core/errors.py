"""Every error NegGen raises on purpose. Messages name the file, the field, what was expected
and how to fix it."""


class NeggenError(Exception):
    """Base class of NegGen's own errors."""


class ConfigError(NeggenError):
    """A config file or override is invalid."""


class SchemaError(NeggenError):
    """A table does not match the schema of record for its artifact."""


class ArtifactError(NeggenError):
    """An artifact is missing, incomplete or inconsistent."""


class InputFormatError(NeggenError):
    """An input file cannot be read at all (malformed records are quarantined instead)."""


class BackendError(NeggenError):
    """An LLM backend cannot be used (no server answers, the model is not served)."""


class ServerUnavailable(BackendError):
    """The server gave no reply after every retry (connection refused or reset, timeouts,
    5xx): a failure to resume from, never an answer to record."""


class TrainingError(NeggenError):
    """Training cannot go on with this data or configuration."""
