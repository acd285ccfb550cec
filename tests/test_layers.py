"""The package's import rules (its docstring's "Layers"), checked by parsing every import.

Each module belongs to one layer; it may import modules of its own layer and of the layers
below, never above. Imports inside functions count too: a lazy import is still a dependency.
"""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

import sde_jax

PACKAGE = pathlib.Path(sde_jax.__file__).parent

# (layer, module prefixes), bottom to top; a module not listed is library (layer 0).
LAYERS = (
    ("library", ()),
    ("data", ("sde_jax.data",)),
    ("experiment", ("sde_jax.experiment", "sde_jax.compat")),
    ("training", ("sde_jax.training",)),
    ("evaluation", ("sde_jax.evaluation",)),
    ("apps", ("sde_jax.apps", "sde_jax.cli")),
)
# The facade re-exports the library and the sampler builder, nothing above.
FACADE_MAY_IMPORT = ("sde_jax.experiment.build",)
# Third-party packages the library must not import: it takes objects, not configs or files.
NOT_IN_LIBRARY = ("ml_collections", "tensorflow", "tensorflow_datasets", "orbax", "clu")


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    relative = pathlib.Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative).is_dir()


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return 0


def imports_of(path: pathlib.Path) -> list[tuple[str, int, bool]]:
    """``(imported module, line, at module level)`` for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` depends on pkg.mod when mod is a module of ours.
            names = [
                f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base
                for a in node.names
                if base.startswith("sde_jax")
            ] or [base]
        else:
            continue
        found += [(name, node.lineno, id(node) in top_level) for name in names]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_checked():
    names = {_module_name(p) for p in MODULES}
    assert {"sde_jax.sdes", "sde_jax.experiment.build", "sde_jax.apps.cli"} <= names
    assert len(names) > 60


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_imports_only_go_down(path):
    module = _module_name(path)
    own = layer_of(module)
    bad = []
    for name, line, _ in imports_of(path):
        if not name.startswith("sde_jax"):
            continue
        if module == "sde_jax":
            ok = layer_of(name) == 0 or name in FACADE_MAY_IMPORT
        else:
            ok = layer_of(name) <= own
        if not ok:
            bad.append(f"line {line}: {name} ({LAYERS[layer_of(name)][0]})")
    assert not bad, f"{module} ({LAYERS[own][0]}) imports a higher layer: {bad}"


@pytest.mark.parametrize(
    "path", [p for p in MODULES if layer_of(_module_name(p)) == 0], ids=lambda p: _module_name(p)
)
def test_library_reads_no_configs_or_files_at_import(path):
    """Library modules import no config, data-set, checkpoint or metric-writer package."""
    bad = [
        f"line {line}: {name}"
        for name, line, top in imports_of(path)
        if top and name.split(".")[0] in NOT_IN_LIBRARY
    ]
    assert not bad, f"{_module_name(path)} imports {bad}"


def test_the_rules_are_written_in_the_package_docstring():
    doc = sde_jax.__doc__
    assert "Layers" in doc
    for name, _ in LAYERS:
        assert name in doc, name


def test_the_checker_resolves_imports():
    """The parser resolves the forms of import the package uses (a check of the check)."""
    path = PACKAGE / "sdes.py"
    found = {name for name, _, _ in imports_of(path)}
    assert "sde_jax.array_types" in found
    cli = {name for name, _, top in imports_of(PACKAGE / "apps" / "cli.py") if not top}
    assert any(layer_of(name) == 4 for name in cli)  # lazy imports of evaluation are seen
    assert layer_of("sde_jax.training.loop") == 3 > layer_of("sde_jax.data.pipeline") == 1


def test_the_package_imports_its_public_names_on_first_use():
    """``import sde_jax`` starts no JAX; every name of ``__all__`` then resolves to its module's."""
    code = """
import json, sys, types, sde_jax
before = "jax" in sys.modules
values = {n: getattr(sde_jax, n) for n in sde_jax.__all__ if n != "__version__"}
where = {
    n: v.__name__ if isinstance(v, types.ModuleType) else getattr(v, "__module__", None)
    for n, v in values.items()
}
print(json.dumps([before, where]))
"""
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    before, where = json.loads(result.stdout.splitlines()[-1])
    assert before is False
    assert set(where) == set(sde_jax._SUBMODULES) | set(sde_jax._NAMES)
    for name in sde_jax._SUBMODULES:
        assert where[name] == f"sde_jax.{name}"
    assert where["get_sampler"] == "sde_jax.experiment.build"
    assert where["VPSDE"] == "sde_jax.sdes" and where["bits_per_dim"] == "sde_jax.likelihood"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sde_jax.nope  # noqa: B018
