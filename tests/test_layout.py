"""The layout: dcgan.py is the tutorial, the package beside it holds the rest, and imports
go one way."""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "dcgan_beyond")


def package_imports():
    """{module: the package's modules it imports} from each module's source."""
    found = {}
    for name in sorted(os.listdir(PACKAGE)):
        if not name.endswith(".py"):
            continue
        module = name[:-3]
        with open(os.path.join(PACKAGE, name)) as f:
            tree = ast.parse(f.read())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    imported.add(node.module)
                elif node.level == 1:
                    imported.update(alias.name for alias in node.names)
                elif node.module and node.module.split(".")[0] in ("dcgan", "dcgan_beyond"):
                    imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names
                                if alias.name.split(".")[0] in ("dcgan", "dcgan_beyond"))
        found[module] = imported
    return found


def test_the_package_never_imports_dcgan():
    for module, imported in package_imports().items():
        assert not {name for name in imported if name.split(".")[0] == "dcgan"}, module


# The package's modules from the foundations up, as its docstring and the README list them
ORDER = ["errors", "files", "devices", "stopping", "time_limit", "data", "download", "ema", "techniques",
         "checkpoints", "tensorboard_log", "metrics", "fidelity", "health", "progress", "outdir",
         "sharing", "inputs", "sampling", "cli"]


def test_each_module_imports_only_those_before_it():
    graph = package_imports()
    assert sorted(graph) == sorted(ORDER + ["__init__"])
    for module in ORDER:
        later = graph[module] - set(ORDER[:ORDER.index(module)])
        assert not later, f"{module} imports {sorted(later)}"


def test_the_packages_modules_import_one_another_without_a_cycle():
    graph = package_imports()
    assert set().union(*graph.values()) <= set(graph), "an import of a module that is not there"
    done, visiting = set(), []

    def visit(module):
        assert module not in visiting, " -> ".join(visiting + [module])
        if module in done:
            return
        visiting.append(module)
        for other in graph[module]:
            visit(other)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_dcgan_py_is_750_lines_or_fewer():
    with open(os.path.join(ROOT, "dcgan.py")) as f:
        assert len(f.read().splitlines()) <= 750


def test_importing_dcgan_and_its_help_load_no_optional_library():
    code = ("import sys, contextlib, io, dcgan\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    dcgan.main(['--help'])\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch_fidelity', 'huggingface_hub', 'tensorboard', 'httpx', 'safetensors'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


TESTS = os.path.join(ROOT, "tests")


def python_files(folder):
    return [os.path.join(dirpath, name) for dirpath, _, names in os.walk(folder)
            for name in names if name.endswith(".py")]


def test_no_test_module_imports_another_and_nothing_edits_sys_path():
    """Shared helpers live in tests/helpers.py and conftest.py's fixtures; pytest's
    pythonpath setting, not sys.path edits, makes the project importable."""
    tests = {name[:-3] for name in os.listdir(TESTS) if name.startswith("test_")}
    for path in python_files(TESTS) + [os.path.join(ROOT, "bench.py")]:
        with open(path) as f:
            source = f.read()
        tree = ast.parse(source)
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & (tests | {"conftest"}), path
        assert not [node for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                    and node.attr == "path" and getattr(node.value, "id", None) == "sys"], path


def test_tests_holds_only_tests_their_fixtures_and_the_specification():
    """Programs that are not tests (the GPU check, bench.py) live outside tests/; the
    tutorial's reference code stays there as the specification."""
    names = sorted(os.listdir(TESTS))
    others = [name for name in names if name.endswith(".py") and not name.startswith("test_")]
    assert others == ["conftest.py", "helpers.py", "tutorial_reference.py"]
    assert sorted(n for n in os.listdir(os.path.join(TESTS, "fixtures")) if n.endswith(".py")) == [
        "ddp_probe.py", "fake_hub.py"]


@pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, ".git")), reason="not a git checkout")
def test_what_the_docs_scripts_make_is_ignored_by_git():
    """docs/scripts/split.sh writes split/, the ablation and quality scripts runs/."""
    made = ["split/train/img_align_celeba/000001.jpg", "runs/fast/default/metrics.csv"]
    done = subprocess.run(["git", "check-ignore", *made], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.split() == made
