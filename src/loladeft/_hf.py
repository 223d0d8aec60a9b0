"""Small helpers around Hugging Face libraries, shared by profiling and training.

Imported only by code that already needs transformers (the ``train`` extra).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence transformers' and the hub client's warnings and progress bars while loading
    models, so the CLI prints only its own lines; restore the previous verbosity after."""
    import huggingface_hub.utils.logging as hub_logging
    import transformers

    verbosity = transformers.logging.get_verbosity()
    hub_verbosity = hub_logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    hub_logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        hub_logging.set_verbosity(hub_verbosity)
        transformers.logging.enable_progress_bar()
