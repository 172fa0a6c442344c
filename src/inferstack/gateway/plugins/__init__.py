"""Built-in scheduler plugins (filters and scorers); importing a module registers its plugins."""

__all__: list[str] = []
