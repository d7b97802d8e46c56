"""The one exception of the bsread package."""


class BsreadError(ValueError):
    """A bsread message or channel that cannot be decoded, or that must not be sent.

    The text says why, so that a rejected message can be logged usefully.
    """
