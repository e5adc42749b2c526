"""The core's layers only look down, have no import cycles, and import at module level.

Layers, lowest first (a module may import its own layer and those below):

    0  errors, config, measure, version     no vqtk imports but each other
    1  interfaces                           the contracts and typed records
    2  io                                   checkpoints, state, images, safe reading
    3  recipe, registry                     schema, structuring, plugins
    4  build, model, pretrained             recipe -> components, the assembled VQGAN
    5  train, evaluation                    the two stages, metrics and reports
    6  testing                              contract checks for plugin authors
    7  cli                                  the command line

``vqtk/__init__.py`` (the public facade) and ``vqtk/__main__.py`` stand above all.
A vqtk import inside a function body is refused everywhere (they hid cycles);
third-party imports inside functions are allowed only for optional or heavy
libraries, listed below with the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "vqtk"

LAYERS = {
    "vqtk.errors": 0, "vqtk.config": 0, "vqtk.measure": 0, "vqtk.version": 0,
    "vqtk.interfaces": 1,
    "vqtk.io": 2,
    "vqtk.recipe": 3, "vqtk.registry": 3,
    "vqtk.build": 4, "vqtk.model": 4, "vqtk.pretrained": 4,
    "vqtk.train": 5, "vqtk.evaluation": 5,
    "vqtk.testing": 6,
    "vqtk.cli": 7,
}
FACADE = {"vqtk", "vqtk.__main__"}

#: third-party modules a function may import, and why
LAZY_OK = {
    "yaml": "optional extra (taming configs)",
    "lpips": "heavy (torchvision models), only when the perceptual loss or metric is built",
    "torchvision": "heavy, only for the Inception and LPIPS backbones",
    "skimage": "heavy, only when the embedded photos are read",
    "vector_quantize_pytorch": "heavy, only when a quantizer is built",
    "x_transformers": "heavy, only when a prior is built",
    "vqtk_builtins": "the built-in plugin, for vqtk.testing's registry_with only",
    "torch_fidelity": "heavy (imports torchvision), only when FID is computed",
    "tensorboard": "optional extra",
    "torch.utils.tensorboard": "optional extra",
    "wandb": "optional extra",
    "torch.distributed.fsdp": "heavy (imports DTensor, 1-2 s), only when a prior trains with strategy fsdp",
    "torch.distributed.device_mesh": "heavy (imports DTensor), only when a prior trains with strategy fsdp",
    "torch.distributed.checkpoint.state_dict": "heavy (imports DTensor), only when a prior trains with strategy fsdp",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _layer(module: str) -> int:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def _imports(path: Path, module: str) -> list[tuple[str, int, bool]]:
    """``(imported module, line, at module level)`` for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` / try blocks at module level count as module level
        if isinstance(node, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(node)}
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, node.lineno, id(node) in top))
    return found


MODULES = _modules()


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m not in FACADE))
def test_imports_only_look_down(module):
    own = _layer(module)
    for name, line, _ in _imports(MODULES[module], module):
        if name == "vqtk" or name.startswith("vqtk."):
            assert name not in FACADE, f"{module}:{line} imports the facade {name}; import the defining module"
            assert _layer(name) <= own, (f"{module}:{line} (layer {own}) imports {name} "
                                         f"(layer {_layer(name)}): an upward import")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_level_imports(module):
    for name, line, at_top in _imports(MODULES[module], module):
        if at_top or name.startswith("__future__"):
            continue
        if name == "vqtk" or name.startswith("vqtk."):
            pytest.fail(f"{module}:{line} imports {name} inside a function: import it at the top")
        root = name.split(".")[0]
        assert name in LAZY_OK or root in LAZY_OK, \
            f"{module}:{line} imports {name} inside a function; only optional or heavy libraries may (LAZY_OK)"


def test_no_import_cycles():
    graph = {m: {n for n, _, top in _imports(p, m) if top and n in MODULES and n != m and n not in FACADE}
             for m, p in MODULES.items() if m not in FACADE}
    # a package's __init__ importing its own submodules is how packages export; not a cycle
    for m in graph:
        graph[m] = {n for n in graph[m] if not (n.startswith(m + ".") and MODULES[m].name == "__init__.py")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_every_module_is_placed():
    for module in MODULES:
        if module not in FACADE:
            _layer(module)


def test_no_module_over_300_lines_without_a_reason():
    """A long module says at its top why it is long (the word "long" in its docstring's reason)."""
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        if len(lines) > 300:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert "Why this module is long" in doc, f"{module}: {len(lines)} lines and no stated reason"
