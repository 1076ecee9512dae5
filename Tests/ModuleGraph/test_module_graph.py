"""Self-test of Scripts/module-graph on synthetic graphs: python3 -m pytest -q Tests/ModuleGraph"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "Scripts" / "module-graph"

# A small package: an app on a client on a codec, a shim, an executable.
GRAPH = {
    "CShim": ([], []),
    "Codec": ([], ["Crypto"]),
    "Media": (["Codec", "CShim"], []),
    "Client": (["Codec"], ["NIOCore"]),
    "tool": (["Client"], ["ArgumentParser"]),
}
ALLOWED = """\
# synthetic
CShim:
Codec: Crypto          # hashes
Media: Codec CShim
Client: Codec NIOCore
tool: Client ArgumentParser
!Client: Media CShim
!Codec: NIO*
!* except tool: tool
group shims = CShim
group codecs = Codec Media
"""
DOCS = "# Doc\n\n## Modules\n\n<!-- module-graph:begin -->\n<!-- module-graph:end -->\n\nHand-written text.\n"


def describe(graph):
    targets = [{"name": name, "type": "executable" if name == "tool" else "library",
                "target_dependencies": internal, "product_dependencies": products}
               for name, (internal, products) in graph.items()]
    # Test targets are neither checked nor drawn, whatever they depend on.
    targets.append({"name": "ClientTests", "type": "test", "target_dependencies": ["Client", "Media", "tool"]})
    return {"name": "synthetic", "targets": targets}


@pytest.fixture
def package(tmp_path):
    """Writes the inputs and returns a function that runs the script on them."""
    files = {"describe": tmp_path / "describe.json", "allowed": tmp_path / "allowed", "docs": tmp_path / "docs.md"}

    def setup(graph=GRAPH, allowed=ALLOWED, docs=DOCS):
        files["describe"].write_text(json.dumps(describe(graph)))
        files["allowed"].write_text(allowed)
        files["docs"].write_text(docs)

    def run(*options):
        result = subprocess.run(
            [sys.executable, str(SCRIPT), *options, "--describe-json", str(files["describe"]),
             "--allowed", str(files["allowed"]), "--docs", str(files["docs"])],
            capture_output=True, text=True)
        return result.returncode, result.stdout + result.stderr

    setup()
    return setup, run, files


def last_line(output):
    return output.strip().splitlines()[-1]


def test_allowed_graph_passes_after_write_docs(package):
    _, run, files = package
    assert run("--write-docs")[0] == 0
    status, output = run("--check")
    assert status == 0, output
    assert "5 targets, 7 edges, all allowed;" in output
    assert re.fullmatch(r"module-graph: \d+ passed, 0 failed", last_line(output))
    docs = files["docs"].read_text()
    assert "flowchart BT" in docs and "Media --> Codec" in docs and "Hand-written text." in docs
    assert 'subgraph group_shims["shims"]' in docs and 'subgraph group_other["other"]' in docs
    assert "| `Client` | `Codec` | NIOCore |" in docs
    assert "ClientTests" not in docs


def test_extra_edge_fails_naming_it(package):
    setup, run, _ = package
    setup(graph={**GRAPH, "Client": (["Codec"], ["NIOCore", "GRDB"])})
    run("--write-docs")
    status, output = run()
    assert status == 1
    assert "error: Client -> GRDB is not allowed" in output
    assert "remove GRDB" in output and "add it to the `Client:` line" in output
    assert re.fullmatch(r"module-graph: \d+ passed, 1 failed", last_line(output))


def test_target_missing_from_allow_list_fails(package):
    setup, run, _ = package
    setup(graph={**GRAPH, "Extra": (["Codec"], [])})
    run("--write-docs")
    status, output = run()
    assert status == 1
    assert "error: target Extra is not in" in output and "`Extra: Codec`" in output


def test_transitive_forbidden_path_fails_and_prints_it(package):
    setup, run, _ = package
    # Client -> Media is allowed directly, but Media brings CShim, which Client must never reach.
    setup(graph={**GRAPH, "Client": (["Codec", "Media"], ["NIOCore"])},
          allowed=ALLOWED.replace("Client: Codec NIOCore", "Client: Codec Media NIOCore").replace(
              "!Client: Media CShim", "!Client: CShim"))
    run("--write-docs")
    status, output = run()
    assert status == 1
    assert "Client must never reach CShim" in output
    assert "but does: Client -> Media -> CShim" in output


def test_glob_and_wildcard_never_rules(package):
    setup, run, _ = package
    setup(graph={**GRAPH, "Codec": (["tool"], ["Crypto", "NIOPosix"])},
          allowed=ALLOWED.replace("Codec: Crypto", "Codec: tool Crypto NIOPosix"))
    run("--write-docs")
    status, output = run()
    assert status == 1
    assert "Codec must never reach NIOPosix" in output and "but does: Codec -> NIOPosix" in output
    assert "Codec must never reach NIOCore" in output and "Codec -> tool -> Client -> NIOCore" in output
    assert "Codec must never reach tool" in output and "but does: Codec -> tool" in output


def test_stale_docs_fail_with_a_diff_and_the_fix(package):
    _, run, files = package
    run("--write-docs")
    files["docs"].write_text(files["docs"].read_text().replace("Media --> Codec\n", ""))
    status, output = run("--check")
    assert status == 1
    assert "out of date" in output and "--write-docs" in output
    assert "+  Media --> Codec" in output and "+++ " in output
    assert re.fullmatch(r"module-graph: \d+ passed, 1 failed", last_line(output))
    assert run("--write-docs")[0] == 0 and run("--check")[0] == 0


def test_docs_without_markers_is_an_input_error(package):
    setup, run, _ = package
    setup(docs="# Doc\n")
    status, output = run()
    assert status == 2 and "module-graph:begin" in output


def test_project_allow_list_satisfies_its_own_never_rules(tmp_path):
    """The target graph Scripts/module-graph.allowed describes must pass its own never-reaches rules:
    a graph with exactly the allowed edges passes every rule."""
    lines = [line.split("#", 1)[0].strip() for line in (SCRIPT.parent / "module-graph.allowed").read_text().splitlines()]
    allowed = {m[1]: m[2].split() for line in lines if (m := re.fullmatch(r"(\w+)\s*:\s*(.*)", line))}
    graph = {name: ([d for d in deps if d in allowed], [d for d in deps if d not in allowed])
             for name, deps in allowed.items()}
    (tmp_path / "describe.json").write_text(json.dumps(describe(graph)))
    (tmp_path / "docs.md").write_text(DOCS)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--write-docs", "--describe-json", str(tmp_path / "describe.json"),
         "--docs", str(tmp_path / "docs.md")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in result.stdout and "note" not in result.stdout


def test_a_declared_dependency_no_file_imports_fails(tmp_path):
    """Package.swift lists only what each target's code imports (paths are relative to the
    describe file's folder when it is given)."""
    for name, imports in {"Codec": ["Crypto"], "Client": ["Codec"], "ClientTests": ["Client", "Testing"]}.items():
        folder = tmp_path / "Sources" / name
        folder.mkdir(parents=True)
        (folder / f"{name}.swift").write_text("".join(f"import {module}\n" for module in imports) + "struct S {}\n")
    graph = {"Codec": ([], ["Crypto"]), "Client": (["Codec"], ["NIOCore"])}
    data = {"name": "synthetic", "targets": [
        {"name": name, "type": "library", "path": f"Sources/{name}", "target_dependencies": internal,
         "product_dependencies": products} for name, (internal, products) in graph.items()]}
    data["targets"].append({"name": "ClientTests", "type": "test", "path": "Sources/ClientTests",
                            "target_dependencies": ["Client"]})
    (tmp_path / "describe.json").write_text(json.dumps(data))
    (tmp_path / "allowed").write_text("Codec: Crypto\nClient: Codec NIOCore\n")
    (tmp_path / "docs.md").write_text(DOCS)
    command = [sys.executable, str(SCRIPT), "--describe-json", str(tmp_path / "describe.json"),
               "--allowed", str(tmp_path / "allowed"), "--docs", str(tmp_path / "docs.md")]
    subprocess.run(command[:2] + ["--write-docs"] + command[2:], capture_output=True, text=True)
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 1, result.stdout
    assert "Client declares NIOCore in Package.swift but none of its files imports it" in result.stdout
    assert "1 declared but unused" in result.stdout
    assert "Codec declares" not in result.stdout and "ClientTests declares" not in result.stdout
