"""The two ways a command can fail that are not bugs: it was called wrongly, or training diverged.

The command line prints these as one clear message, without a traceback.
"""


class UsageError(Exception):
    """A mistake in how a command was called: a missing dataset, a contradictory option."""


class TrainingDiverged(RuntimeError):
    """A loss (or the gradient) became NaN or Inf; the message names the iteration and the term."""
