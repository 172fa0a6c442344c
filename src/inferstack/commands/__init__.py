"""The ``inferstack`` subcommands, one module per component (``register(subparsers)`` in each).

Commands sit above the library packages: a command may use several components (``batch`` reads
the running stack's status, ``setup`` prepares models and adapters), while the components
themselves never import a command, so the package graph stays acyclic
(``tests/unit/test_layering.py``).
"""

__all__: list[str] = []
