"""The public surface: every module declares __all__, and every listed name exists."""

import importlib
import pkgutil

import inferstack

# Run as a script by the engine interpreter (needs torch); never imported by the package.
_SCRIPTS = {
    "inferstack.models.convert_gguf",
    "inferstack.lora.train_lora",
    "inferstack.__main__",
    "inferstack.gateway.__main__",
}


def _modules():
    for info in pkgutil.walk_packages(inferstack.__path__, "inferstack."):
        if info.name not in _SCRIPTS:
            yield info.name


def test_every_module_declares_all_and_its_names_exist():
    for name in _modules():
        module = importlib.import_module(name)
        if hasattr(module, "__path__") and not hasattr(module, "__all__"):
            continue  # a package whose __init__ only marks the folder
        assert hasattr(module, "__all__"), f"{name} has no __all__"
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert not missing, f"{name}.__all__ lists missing names {missing}"


def test_package_reexports_the_error_tree():
    for name in ("InferstackError", "ConfigError", "SetupError", "ModelNotFoundError", "PortInUseError",
                 "ReplicaStartError"):
        assert issubclass(getattr(inferstack, name), Exception)
    assert issubclass(inferstack.ConfigError, inferstack.InferstackError)
