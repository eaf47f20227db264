"""The project's own exceptions. Library errors are re-raised as one of these
with the original attached as ``__cause__`` (``raise X(...) from exc``)."""


class BluegreenError(Exception):
    """Base class: the CLI prints these as one clear message and exits non-zero."""


class ConfigError(BluegreenError):
    """A setting is missing or invalid; the message names it."""


class StackError(BluegreenError):
    """A local service could not be started, stopped or reached."""


class SerializationError(BluegreenError):
    """A message could not be encoded or decoded with the project's Avro schemas."""


class SchemaCompatibilityError(BluegreenError):
    """A schema change would break readers of older data or older readers of new data."""


class TransformError(BluegreenError):
    """A blue change cannot be mapped to green; the message says why (it goes to the DLQ)."""


class DependencyError(BluegreenError):
    """A service could not reach a dependency (blue, green, control, Kafka) in time.

    The message is one line: the service, the target without credentials, the cause.
    """
