"""Plugin discovery through entry points: fake entry points (as pluggy's tests do), and a real
third-party distribution pip-installed from a temp dir and used from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution
from pathlib import Path

import pytest
import torch

import parm.coding.registry as registry_mod
from helpers import TINY
from parm import DISTRIBUTION
from parm.coding import CodeSpec, Encoder, PluginError, PluginImportError, build_code
from parm.coding.registry import AUTOLOAD_ENV, Registry
from parm_coders.concat import ConcatEncoder
from parm_coders.sum import SumEncoder

ROOT = Path(__file__).resolve().parents[1]


class FakeDist:
    def __init__(self, name: str, version: str = "1.0") -> None:
        self.name, self.version = name, version


def fake_ep(name: str, value: str, dist: str) -> EntryPoint:
    ep = EntryPoint(name=name, value=value, group="parm.encoders")
    return ep._for(FakeDist(dist))  # type: ignore[attr-defined]  # how importlib attaches the distribution


@pytest.fixture
def fake_registry(monkeypatch: pytest.MonkeyPatch) -> Registry[Encoder]:
    eps = [
        fake_ep("good", "parm_coders.sum:SumEncoder", "parm-good"),
        fake_ep("broken", "parm_not_a_module_xyz:Enc", "parm-broken"),
        fake_ep("twice", "parm_coders.sum:SumEncoder", "parm-a"),
        fake_ep("twice", "parm_coders.concat:ConcatEncoder", "parm-b"),
        fake_ep("notacoder", "os.path:join", "parm-weird"),
    ]
    monkeypatch.setattr(registry_mod, "entry_points", lambda group: [e for e in eps if e.group == group])
    monkeypatch.delenv(AUTOLOAD_ENV, raising=False)
    return Registry("parm.encoders", "encoder", Encoder)


def test_lazy_discovery_loads_only_what_is_asked(fake_registry: Registry[Encoder]) -> None:
    assert fake_registry.names() == ["broken", "good", "notacoder", "twice"]
    assert fake_registry.get("good") is SumEncoder  # the broken plugin does not get in the way


def test_broken_plugin_names_plugin_distribution_and_cause(fake_registry: Registry[Encoder]) -> None:
    with pytest.raises(PluginImportError, match=r"encoder plugin 'broken' \(distribution parm-broken 1.0, entry "
                       r"point 'parm_not_a_module_xyz:Enc'.*ModuleNotFoundError") as info:
        fake_registry.get("broken")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_duplicate_names_are_refused_unless_overridden(fake_registry: Registry[Encoder]) -> None:
    assert fake_registry.get("good") is SumEncoder  # a duplicate elsewhere matters only when it is used
    with pytest.raises(PluginError, match=r"'twice' is registered by several plugins: .*parm-a.*parm-b.*Choose one "
                       r"by its distribution: encoder=parm-a:twice or encoder=parm-b:twice"):
        fake_registry.get("twice")
    assert fake_registry.get("parm-b:twice") is ConcatEncoder  # chosen by distribution
    assert fake_registry.get("parm-a:twice") is SumEncoder
    with pytest.raises(PluginError, match="already registered"):
        fake_registry.register("good", SumEncoder)
    fake_registry.register("twice", SumEncoder, override=True)
    assert fake_registry.get("twice") is SumEncoder


def test_non_coder_objects_are_refused(fake_registry: Registry[Encoder]) -> None:
    with pytest.raises(PluginError, match="not a subclass of parm.coding.base.Encoder"):
        fake_registry.get("notacoder")


def test_unknown_name_lists_installed(fake_registry: Registry[Encoder]) -> None:
    with pytest.raises(ValueError, match="unknown encoder 'x'; installed encoders: broken, good, notacoder, twice"):
        fake_registry.get("x")


def test_env_var_disables_autoload(fake_registry: Registry[Encoder], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    assert fake_registry.names() == []  # no fake here comes from parm's own distribution
    fake_registry.register("mine", SumEncoder)
    assert fake_registry.get("mine") is SumEncoder


def test_disabled_autoload_keeps_the_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    encoders = Registry("parm.encoders", "encoder", Encoder)
    assert {"sum", "concat", "learned"} <= set(encoders.names()) and "berrut" not in encoders.names()
    assert encoders.get("sum") is SumEncoder and encoders.get(f"{DISTRIBUTION}:sum") is SumEncoder


def test_distribution_name_is_the_one_pyproject_declares() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert f'name = "{DISTRIBUTION}"' in text and DISTRIBUTION != "parm"  # "parm" on PyPI is another project
    assert f"{DISTRIBUTION}[" in (ROOT / "README.md").read_text()
    assert distribution(DISTRIBUTION).entry_points.select(group="parm.encoders")


def test_env_var_still_allows_registering_by_hand(fake_registry: Registry[Encoder],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    fake_registry.register("mine", SumEncoder)
    assert fake_registry.get("mine") is SumEncoder


def test_the_example_plugin_package_is_installed_and_serves_its_coders() -> None:
    """plugins/parm-example, the template of the README's plugin contract, installed by the setup command."""
    try:
        dist = distribution("parm-example")
    except PackageNotFoundError:
        pytest.fail("plugins/parm-example is not installed: pip install -e plugins/parm-example (README setup).")
    assert {ep.name for ep in dist.entry_points} == {"weighted", "nearest"}
    code = build_code("weighted", "nearest", CodeSpec(2, 1), (4,), (3,))
    assert torch.equal(code.encoder.coefficients, torch.tensor([[0.5, 0.5]]))
    outputs, parities = torch.randn(1, 2, 3), torch.randn(1, 1, 3)
    available = torch.tensor([[False, True, True]])
    torch.testing.assert_close(code.decode(outputs, parities, available)[0, 0], parities[0, 0])  # P / (0.5 + 0.5)


PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "parm-negsum-plugin"
version = "0.3.0"

[project.entry-points."parm.encoders"]
negsum = "parm_negsum:NegSumEncoder"
"""

PLUGIN_MODULE = '''
"""A third-party encoder: parity = -(sum of the queries); linear, so subtraction pairs with it."""
import torch
from parm.coding import Encoder


class NegSumEncoder(Encoder):
    traits = frozenset({"linear"})

    @property
    def coefficients(self):
        return -torch.ones(self.spec.r, self.spec.k)

    def encode(self, x):
        return -x.sum(dim=1, keepdim=True).expand(-1, self.spec.r, *x.shape[2:]).contiguous()
'''


@pytest.mark.slow
def test_third_party_plugin_installs_and_runs_from_cli(tmp_path: Path, tiny_data_dir: Path) -> None:
    src = tmp_path / "plugin"
    src.mkdir()
    (src / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (src / "parm_negsum.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(src)], check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(ROOT / "train.py"), "code.encoder=negsum", f"data_dir={tiny_data_dir}",
           f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}", *TINY]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "negsum/subtraction" in done.stdout
    assert (tmp_path / "run" / "summary.json").exists()
