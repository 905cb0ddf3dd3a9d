"""The README's Architecture section says what `.importlinter` enforces, module for module."""

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "agentainer"


def contracts() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / ".importlinter", encoding="utf-8")
    return parser


def architecture() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("## Architecture\n", 1)[1].split("\n## ", 1)[0]


def test_every_module_is_on_the_map():
    block = architecture().split("```", 2)[1]
    named = set(re.findall(r"[a-z_]+\.py", block))
    modules = {path.name for path in PACKAGE.rglob("*.py") if path.name != "__init__.py"}
    assert modules - named == set()
    assert named - modules == set()


def test_the_layers_table_lists_the_contracts_layers_in_order():
    layers = [line.strip() for line in contracts()["importlinter:contract:layers"]["layers"]
              .splitlines() if line.strip()]
    heads = [" | ".join(part.strip().removeprefix("agentainer.") for part in layer.split("|"))
             for layer in layers if not layer.startswith("agentainer.config")
             and not layer.startswith("agentainer.errors")]
    table = re.findall(r"^\| `([^|]+?)`(?: \\\| `([^|]+?)`)? \|", architecture(), re.M)
    rows = [" | ".join(cell for cell in row if cell) for row in table]
    assert rows == heads


def test_every_contract_is_named_in_the_readme():
    names = {section.split(":")[-1] for section in contracts().sections()
             if section.startswith("importlinter:contract:")}
    text = architecture()
    assert {name for name in names if f"`{name}`" not in text} == set()


def test_every_leaf_in_the_contract_is_a_leaf_on_the_map():
    layers = contracts()["importlinter:contract:layers"]["layers"]
    leaves = {name.strip().removeprefix("agentainer.") + ".py"
              for line in layers.splitlines() if ":" in line for name in line.split(":")}
    block = architecture().split("```", 2)[1]
    leaf_text = block.split("  leaves", 1)[1].split("\nbin/", 1)[0]
    assert leaves == set(re.findall(r"[a-z_]+\.py", leaf_text))
