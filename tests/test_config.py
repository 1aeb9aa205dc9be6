import dataclasses

import pytest
import yaml

from onceforall.run.config import (
    Config,
    ConfigError,
    config_from_dict,
    field_docs,
    list_presets,
    load_config,
    to_dict,
    to_yaml,
)


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_loads_and_round_trips(name):
    cfg = load_config(name)
    assert cfg.name == name
    again = config_from_dict(yaml.safe_load(to_yaml(cfg)))
    assert to_dict(again) == to_dict(cfg)


def test_presets_include_the_paper_recipes():
    assert {"fashion-mnist-quick", "cifar10", "cifar100", "imagenet", "imagenet-proxyless"} <= set(list_presets())
    imagenet = load_config("imagenet")
    assert (imagenet.train.epochs, imagenet.train.batch_size, imagenet.optim.lr) == (270, 2048, 2.6)
    assert round(imagenet.strategy.shrink_start * 270) == 145 and imagenet.strategy.eps_ramp_epochs == 5
    assert imagenet.optim.weight_decay == 3e-5 and imagenet.optim.label_smoothing == 0.1
    assert imagenet.model.dropout == 0.1 and imagenet.strategy.num_subnets == 4
    assert load_config("imagenet-proxyless").model.space == "proxyless"


def test_dotted_overrides_are_typed():
    cfg = load_config("fashion-mnist-quick", ["train.epochs=3", "strategy.shrink_start=0.25", "optim.grad_clip=5",
                                              "model.resolutions=[16, 24]", "data.root=/tmp/x"])
    assert cfg.train.epochs == 3 and cfg.strategy.shrink_start == 0.25 and cfg.optim.grad_clip == 5.0
    assert cfg.model.resolutions == [16, 24] and cfg.data.root == "/tmp/x"
    # YAML 1.1 reads off/on as booleans; string fields take them back as written
    assert load_config("fashion-mnist-quick", ["train.progress=off"]).train.progress == "off"
    assert load_config("fashion-mnist-quick", ["train.progress=on"]).train.progress == "on"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochz=3", r"train.epochz: unknown field; valid: epochs, batch_size"),
        ("train.epochs=three", r"train.epochs: 'three' is not valid; expected an integer"),
        ("train.epochs=0", r"train.epochs: 0 is not valid; must be >= 1"),
        ("strategy.name=nas", r"strategy.name: 'nas' is not valid; valid: bignas, .*deps"),
        ("model.space=resnet", r"model.space: 'resnet' is not valid; valid: mbv3"),
        ("data.dataset=mnist", r"data.dataset: 'mnist' is not valid; valid: fashion-mnist, fashion-mnist-pairs"),
        ("strategy.shrink_start=1.5", r"strategy.shrink_start: 1.5 is not valid; must be in \[0, 1\)"),
        ("train.channels_last=maybe", r"train.channels_last: 'maybe' is not valid; expected true or false"),
        ("train.device=tpu", r"train.device: 'tpu' is not valid; valid: auto, cpu, cuda, cuda:N"),
        ("train.micro_batches=3", r"train.micro_batches: 3 does not divide train.batch_size 128"),
        ("epochs", r"override 'epochs' is not valid; expected section.field=value"),
    ],
)
def test_bad_values_name_the_field_and_the_valid_choices(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("fashion-mnist-quick", [override])


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'; valid: .*fashion-mnist-quick"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    top = tmp_path / "top.yaml"
    top.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(str(top))


def test_every_field_is_documented():
    rows = field_docs()
    assert len(rows) > 50
    undocumented = [name for name, _, _, doc in rows if len(doc) < 8]
    assert not undocumented
    names = {name for name, *_ in rows}
    assert {"strategy.eps_start", "train.batch_size", "optim.lr", "data.dataset"} <= names


def test_defaults_match_the_paper():
    c = Config()
    assert c.strategy.shrink_start == 0.5 and c.strategy.eps_start == 1e-4 and c.strategy.num_subnets == 4
    assert c.optim.momentum == 0.9 and c.optim.nesterov and c.optim.weight_decay == 3e-5
    assert c.optim.label_smoothing == 0.1 and c.strategy.kd_temperature == 1.0
    assert c.train.price_per_device_hour == 2.13


def test_presets_inherit_with_a_deep_merge(tmp_path):
    quick, bench = load_config("fashion-mnist-quick"), load_config("fashion-mnist")
    assert quick.train.epochs == 3 and bench.train.epochs == 10 and quick.strategy.eps_ramp_epochs is None
    assert quick.data.train_subset == 15000 and bench.data.train_subset == 24000
    # every other data field inherited
    assert quick.model == bench.model and dataclasses.replace(quick.data, train_subset=24000) == bench.data
    ofa_ps = load_config("fashion-mnist-ofa-ps")
    assert ofa_ps.strategy.name == "ofa-ps" and ofa_ps.train.epochs == 22 and ofa_ps.optim.lr == bench.optim.lr
    (tmp_path / "a.yaml").write_text(f"inherit: {tmp_path / 'b.yaml'}\ntrain:\n  epochs: 2\n")
    (tmp_path / "b.yaml").write_text(f"inherit: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(ConfigError, match="makes a cycle"):
        load_config(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("inherit: fashion-mnist\ntrain:\n  seed: 3\n")
    c = load_config(str(tmp_path / "c.yaml"))
    assert c.train.seed == 3 and c.train.epochs == 10 and c.name == "fashion-mnist"


@pytest.mark.parametrize(
    "phases, message",
    [
        ("[{name: a, fraction: 0.9}]", r"strategy.phases: fractions sum to 0.9000; they must sum to 1"),
        ("[{name: a, fraction: 1.0, epochs: 3}]", r"strategy.phases: entry .* is not valid; keys: "),
        ("[{name: a, fraction: 1.0, kernels: big}]", r"phase 'a' kernels 'big' is not valid; valid: all, max, top2"),
        ("[{name: a, fraction: 1.0, depths: [9]}]", r"restrict: depths 9 for stage 0 not in the space; valid: 2, 3, 4"),
        ("[{name: a, fraction: 1.0, num_subnets: -1}]", r"phase 'a' num_subnets -1 is not valid"),
        ("[{name: a, fraction: 1.0, coupled: true, depths: [3, 4]}]", r"couples 2 depths with 3 expands"),
        ("[oops]", r"strategy.phases\[0\]: 'oops' is not valid; expected a mapping"),
    ],
)
def test_strategy_checks_its_section_when_the_config_loads(phases, message):
    """Each strategy validates its own fields against the space it will train, as a one-line ConfigError."""
    with pytest.raises(ConfigError, match=message):
        load_config("fashion-mnist-quick", ["strategy.name=ofa-ps", f"strategy.phases={phases}"])
    # the same section is valid for a strategy that does not read it
    load_config("fashion-mnist-quick", ["strategy.name=bignas", "strategy.phases=[{name: a, fraction: 0.9}]"])


def test_bad_phases_fail_before_any_data_is_read(tmp_path, capsys):
    from onceforall.cli import main

    code = main(["train", "--out-dir", str(tmp_path), "strategy.name=compofa", "data.root=/nonexistent",
                 "strategy.phases=[{name: a, fraction: 0.5}]"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "strategy.phases: fractions sum to 0.5000" in err and "/nonexistent" not in err
    assert not any(tmp_path.iterdir())


def test_model_kernel_choices_restrict_the_space():
    from onceforall.run.config import model_space

    fixed = model_space(load_config("fashion-mnist-quick", ["model.kernels=[7]"]).model)
    assert all(st.kernels == (7,) for st in fixed.stages) and fixed.restricted
    compofa = load_config("fashion-mnist-compofa-own")
    space = model_space(compofa.model)
    assert [st.kernels for st in space.stages] == [(3,), (5,), (3,), (3,), (5,)]
    for overrides, message in [
        (["model.kernels=[9]"], r"model.kernels: \[9\] is not valid; choose among 3, 5, 7"),
        (["model.stage_kernels=[3, 5]", "model.kernels=null"], r"model.stage_kernels: \[3, 5\] is not valid; need one"),
        (["model.stage_kernels=[3, 5, 3, 3, 5]", "model.kernels=[7]"], "set either model.kernels or"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config("fashion-mnist-quick", overrides)


@pytest.mark.parametrize("family", ["fashion-mnist", "imagenet"])
def test_compofa_presets_train_the_kernel7_space_over_the_deps_macs_range(family):
    """CompOFA as the DεpS paper ran it: compound sampling on the kernel-7 space, so the coupled space's smallest
    and largest subnets are the whole space's (its front spans the same MACs as DεpS's); CompOFA's own per-stage
    kernels (the -own preset, or the override in the imagenet preset's comment) give a narrower range."""
    from onceforall.core.strategies import Schedule, get_strategy
    from onceforall.run.config import model_space

    deps, compofa = load_config(family), load_config(f"{family}-compofa")
    space = model_space(deps.model)
    assert model_space(compofa.model) == space and all(st.kernels == (7,) for st in space.stages)
    sched = Schedule(compofa.train.epochs, 10, compofa.optim.lr)
    trained = get_strategy(compofa.strategy, space, sched, 0).trained_space()
    assert trained.coupling == ((2, 3), (3, 4), (4, 6))
    assert trained.min() == space.min() and trained.max() == space.max()
    assert trained.macs_range() == get_strategy(deps.strategy, space, sched, 0).trained_space().macs_range()
    own = load_config(f"{family}-compofa", ["model.kernels=null", "model.stage_kernels=[3,5,3,3,5]"]) \
        if family == "imagenet" else load_config("fashion-mnist-compofa-own")
    own_trained = get_strategy(own.strategy, model_space(own.model), sched, 0).trained_space()
    lo, hi = own_trained.macs_range()
    assert lo < space.macs(space.min()) and hi < space.macs(space.max())  # smaller kernels: fewer MACs at both ends
