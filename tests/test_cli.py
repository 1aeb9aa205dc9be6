import re
import subprocess
import sys
from pathlib import Path

import pytest

import onceforall as ofa
from onceforall.cli import build_parser, main

from .helpers import needs_fashion


def test_module_entry_point_runs_the_cli():
    """`python -m onceforall` is the CLI: every subcommand is listed, and `spaces` prints each registered space
    with the MACs range the library computes."""
    out = subprocess.run([sys.executable, "-m", "onceforall", "--help"], capture_output=True, text=True, check=True)
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert {"train", "eval", "compare", "search", "export", "latency-table", "analyze-gradients", "demo"} <= commands
    listed = set(re.findall(r"^    ([a-z][a-z-]*)\s*(?:\s\s|$)", out.stdout, re.M))
    assert listed == commands
    out = subprocess.run([sys.executable, "-m", "onceforall", "spaces"], capture_output=True, text=True, check=True)
    rows = dict(re.findall(r"^(\S+)\s+MACs\s+(\S+M \.\. +\S+M)", out.stdout, re.M))
    assert set(rows) == set(ofa.list_spaces())
    for name, text in rows.items():
        lo, hi = ofa.get_space(name).macs_range()
        assert text.split() == [f"{lo / 1e6:.2f}M", "..", f"{hi / 1e6:.2f}M"]


def test_console_script_is_onceforall_alone():
    """No ``ofa`` alias: it would shadow OFA's own package name (``import ofa`` / its scripts) beside ours."""
    import tomllib

    scripts = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"onceforall": "onceforall.cli:main"}


def test_console_scripts_are_installed():
    path = Path(sys.executable).parent / "onceforall"
    if not path.exists():
        pytest.skip("package not installed in this interpreter's environment (run through `make test`)")
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("onceforall ")


def test_bad_space_is_one_line_error_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "onceforall", "spaces", "--space", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "unknown name 'nope'; valid: mbv3, mbv3-cifar" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_spaces_describes_a_space(capsys):
    assert main(["spaces", "--space", "mbv3", "--resolutions", "224", "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "566.17M (max)" in out and out.count("MACs") >= 3


def test_bad_resolutions_argument(capsys):
    with pytest.raises(SystemExit) as e:
        main(["spaces", "--space", "mbv3", "--resolutions", "big"])
    assert e.value.code == 2
    assert "resolutions: 'big' is not valid" in capsys.readouterr().err


@needs_fashion
def test_demo_prints_ofa_range_and_trains(tmp_path, capsys):
    tiny = ["data.train_subset=128", "data.eval_subset=64", "data.bn_images=64", "data.image_size=16",
            "data.val_split=200", "data.test_subset=300",
            "model.width_mult=0.25", "model.resolutions=[16]", "train.batch_size=32", "train.epochs=1",
            "train.threads=1"]
    assert main(["demo", "--out-dir", str(tmp_path), "--name", "d", "--per-bucket", "2", "--samples", "8",
                 "--selection-images", "64", *tiny]) == 0
    out = capsys.readouterr().out
    assert "k7 e3 d2: 151.29M MACs" in out and "566.17M MACs" in out
    assert re.search(r"full model \d+\.\d+%, smallest subnet \d+\.\d+%", out)
    assert (tmp_path / "d" / "cost.json").exists()


def test_unclear_inputs_get_a_one_line_error_naming_the_option(capsys, tmp_path, monkeypatch):
    """A negative budget reaches its own check (not argparse's "expected one argument"); --memory-dtype without a
    memory cost is refused instead of ignored; latency-table --run proves the run writable before measuring."""
    assert main(["search", str(tmp_path), "--macs", "-5M"]) == 2
    assert "error: --macs: '-5M' is not valid; expected positive numbers" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--from-front", "f.json", "--latency-ms", "-2"]) == 2
    assert "expected one argument" not in capsys.readouterr().err
    assert main(["search", str(tmp_path), "--macs", "5M", "--memory-dtype", "int4"]) == 2
    err = capsys.readouterr().err
    assert "--memory-dtype int4 applies to the peak-memory cost only" in err and err.count("\n") == 1
    import onceforall.cli as cli
    import onceforall.run.rundir as rundir
    import onceforall.workflows.latency as latency

    def readonly(folder):
        raise PermissionError(13, "Permission denied", str(folder))

    measured = []
    monkeypatch.setattr(rundir, "load_run", lambda *a, **k: type("R", (), {"space": ofa.get_space("mbv3-cifar")}))
    monkeypatch.setattr(cli, "ensure_writable", readonly)
    monkeypatch.setattr(latency, "make_latency_table", lambda *a, **k: measured.append(1))
    assert main(["latency-table", "--run", str(tmp_path)]) == 2
    assert f"Permission denied: {tmp_path}" in capsys.readouterr().err and not measured


def test_search_and_export_options_carry_the_argument_dataclasses_defaults():
    """``search`` and ``export`` take their defaults from SearchArgs / FrontArgs / ExportArgs: one default each (the
    options whose default depends on --front say both in their help)."""
    import dataclasses

    from onceforall.workflows.export import ExportArgs
    from onceforall.workflows.front import FrontArgs
    from onceforall.workflows.search import SearchArgs

    parser = build_parser()
    search = vars(parser.parse_args(["search", "RUN"]))
    for cls in (SearchArgs, FrontArgs):
        for f in dataclasses.fields(cls):
            if f.name in ("population", "generations"):
                continue  # NSGA-II's sizes: not options
            option = f"--{f.name.replace('_', '-')}"
            if search[f.name] is None and f.default is not None:  # not given: the dataclass's default, in its help
                action = next(a for a in parser._subparsers._group_actions[0].choices["search"]._actions
                              if a.dest == f.name)
                assert f"default {f.default}" in action.help or f"{f.default} with --front" in action.help, \
                    f"search {option}'s help vs {cls.__name__}.{f.name}"
                continue
            assert search[f.name] == f.default, f"search {option} vs {cls.__name__}.{f.name}"
    sub = next(a for a in parser._subparsers._group_actions[0].choices["search"]._actions if a.dest == "samples")
    assert f"default {SearchArgs.samples}; {FrontArgs.samples} with --front" in sub.help
    dtype = next(a for a in parser._subparsers._group_actions[0].choices["search"]._actions
                 if a.dest == "memory_dtype")
    assert f"default {FrontArgs.memory_dtype}" in dtype.help
    export = vars(parser.parse_args(["export", "RUN"]))
    assert {f.name: export["out" if f.name == "out_dir" else f.name] for f in dataclasses.fields(ExportArgs)} == \
        {f.name: f.default for f in dataclasses.fields(ExportArgs)}
