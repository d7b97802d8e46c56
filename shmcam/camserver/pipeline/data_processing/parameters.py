"""The JSON of a function's parameters (`processing_parameters`), made once per parameters
object, not per frame: a pipeline hands the same dict until its config changes."""

from __future__ import annotations

import json

_last: tuple = (None, None, "")  # (parameters, extra, JSON)


def parameters_json(parameters: dict, **extra) -> str:
    """JSON of parameters (without the background array) updated with extra."""
    global _last
    given, given_extra, text = _last
    if given is not parameters or given_extra != extra:
        shown = {k: v for k, v in parameters.items() if k != "background_data"}
        text = json.dumps({**shown, **extra})
        _last = (parameters, extra, text)
    return text
