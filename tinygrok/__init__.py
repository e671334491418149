"""tinygrok: a hand-written transformer for studying grokking on modular arithmetic.

The Python API (api.py): `tinygrok.Config`, `tinygrok.config_from`, `tinygrok.run`,
`tinygrok.load` and `tinygrok.Run`. They are loaded on first use, so that `import tinygrok` (and
the command line, which imports it) does not pay for NumPy and the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["Config", "Run", "config_from", "load", "run", "__version__"]

if TYPE_CHECKING:  # for type checkers and editors; at run time `__getattr__` loads them
    from tinygrok.api import Config, Run, config_from, load, run


def __getattr__(name: str):
    if name in __all__:  # the API's names (__version__ is found before this is called)
        from tinygrok import api

        return getattr(api, name)
    raise AttributeError(f"module 'tinygrok' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
