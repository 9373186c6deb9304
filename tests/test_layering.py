"""The package is layered (docs: DESIGN.md "A package layout that shows it"): each part imports only parts listed
before it, so no two parts import each other. Every import counts, also those inside functions."""

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sidrec"

# from the foundation up; parts on one line form one layer (they may import each other, but not in a cycle)
LAYERS = [
    {"__init__", "io", "config", "errors"},
    {"data"}, {"embed"}, {"sid"}, {"tasks"}, {"model"}, {"decode"}, {"evaluate"}, {"baselines"}, {"rerank"}, {"train"},
    {"analysis"}, {"optimize"}, {"serve"}, {"pipeline"}, {"demo"}, {"cli", "__main__"},
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}

# Known upward imports, each with why it is still there; an entry must go when its import does (tested below).
KNOWN = {
    ("optimize", "pipeline"): "optimize.strategies.section_models reads PipelineConfig's sections, and "
                              "pipeline.iterate calls optimize: the run config belongs below optimize",
}


def part_of(module: str) -> str | None:
    names = module.split(".")
    if names[0] != "sidrec":
        return None
    return names[1] if len(names) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    names = list(rel.parts)
    return ".".join(names[:-1] if names[-1] == "__init__" else names)


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in a module's source, at any depth."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            out.append((node.lineno, target))
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names]  # `from sidrec import serve`
    return out


def part_edges() -> dict[tuple[str, str], list[str]]:
    """(importing part, imported part) -> where (file:line), over every module of the package."""
    edges = defaultdict(set)
    for path in sorted(SRC.rglob("*.py")):
        src = part_of(module_name(path))
        for line, target in imports(path.read_text(), module_name(path), path.name == "__init__.py"):
            dst = part_of(target)
            if dst is None or dst == src:
                continue
            if target.count(".") == 1 and target.split(".")[1] not in RANK:  # `from sidrec import __version__`
                dst = "__init__"
            if dst != src:
                edges[(src, dst)].add(f"{path.relative_to(SRC.parent)}:{line}")
    return {edge: sorted(where) for edge, where in edges.items()}


def test_every_part_has_a_place():
    parts = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    assert parts <= set(RANK), f"place {sorted(parts - set(RANK))} in LAYERS (and DESIGN.md)"


def test_no_part_imports_a_later_one():
    upward = {e: where for e, where in part_edges().items() if RANK[e[1]] > RANK[e[0]] and e not in KNOWN}
    assert not upward, "\n".join(f"{a} imports {b} (listed later): {', '.join(w)}" for (a, b), w in upward.items())


def test_no_cycle_between_parts():
    graph = defaultdict(set)
    for a, b in part_edges():
        if (a, b) not in KNOWN:
            graph[a].add(b)
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_known_exceptions_still_exist():
    edges = part_edges()
    gone = [e for e in KNOWN if e not in edges]
    assert not gone, f"{gone} no longer imported: remove them from KNOWN"


def test_the_checker_sees_imports_inside_functions():
    code = "def f():\n    from sidrec.serve.recommender import Recommender\n    from . import harness\n"
    assert imports(code, "sidrec.evaluate.probe") == [
        (2, "sidrec.serve.recommender"), (2, "sidrec.serve.recommender.Recommender"),
        (3, "sidrec.evaluate"), (3, "sidrec.evaluate.harness")]
    assert imports("from .trie import SidTrie\n", "sidrec.decode", is_package=True) == [
        (1, "sidrec.decode.trie"), (1, "sidrec.decode.trie.SidTrie")]
