"""agile.paper.study: the groups are valid sweeps, their command-line flags; agile.paper.stats:
paired tests, Holm's correction, refusing NaN and inf; the dense fold."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agile_testing import FAST_COMPILE
from scipy import stats as scipy_stats

from agile.errors import ConfigError
from agile.folding import Link, fold
from agile.paper import config as config_lib
from agile.paper import stats, study
from agile.paper import steps as steps_lib
from agile.paper.combos import COMBOS
from agile.paper.models.paper_cnn import CNN
from agile.paper.tasks import create_model


@pytest.mark.parametrize("group", study.GROUPS, ids=lambda g: g.name)
def test_every_group_gives_valid_trial_configs(group, tmp_path, monkeypatch):
    """One trial per pair and block of seeds, each named once and valid (the transformer's
    against a small corpus: its vocabulary sets the model's output size)."""
    (tmp_path / "a.txt").write_text("A corpus of some characters, for the vocabulary.\n")
    monkeypatch.setenv("TEXT_DIR", str(tmp_path))
    trials = group.trials()
    blocks = group.blocks()
    assert len(trials) == len(group.pairs) * len(blocks)
    assert len({t.name for t in trials}) == len(trials)
    assert [t.name for t in trials[:len(group.pairs)]] == [group.trial_name(*pair)
                                                           for pair in group.pairs]
    for trial, block in zip(trials, [b for b in blocks for _ in group.pairs], strict=True):
        config_lib.validate(trial.config)
        assert trial.config.num_seeds == len(block) and trial.config.seed == block.start
    assert group.seeds >= 5
    for name, value in group.overrides.items():
        section, _, field = name.rpartition(".")
        assert (trials[0].config[section] if section else trials[0].config)[field] == value


def test_table1_group_is_the_papers_setup():
    group = study.GROUPS_BY_NAME["table1"]
    config = group.base_config()
    assert len(group.pairs) == 12 and group.seeds >= 10
    assert dict(group.overrides) == {"test_every": 4}  # denser test-loss curves, same training
    assert (config.batch_size, config.data.train_size, tuple(config.model.conv_features),
            config.model.dense_features) == (100, 5000, (16, 8, 4), 30)


def test_paired_comparison_matches_scipy_and_its_interval():
    rng = np.random.default_rng(0)
    plain = rng.normal(0.15, 0.01, 10)
    agile = plain - 0.005 + rng.normal(0, 0.003, 10)
    result = stats.paired_comparison(agile, plain)
    differences = agile - plain
    assert result["mean_difference"] == pytest.approx(differences.mean())
    assert result["p_value"] == pytest.approx(scipy_stats.ttest_rel(agile, plain).pvalue)
    low, high = scipy_stats.t.interval(0.95, 9, loc=differences.mean(),
                                       scale=scipy_stats.sem(differences))
    assert (result["ci_low"], result["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert result["seeds"] == 10
    with pytest.raises(ValueError, match="two equally long sequences of >= 2 values"):
        stats.paired_comparison([0.1, 0.2], [0.1])


def test_holm_adjusts_by_rank_and_keeps_order():
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.5])
    # sorted: 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> 0.09 (monotone), 0.5*1=0.5
    assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert stats.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


@pytest.mark.slow
def test_folded_plain_twin_computes_the_same_function():
    """An agile dense layer folds into its neighbours: same logits with the plain activation."""
    images = np.random.default_rng(1).uniform(size=(16, 28, 28, 1)).astype(np.float32)
    agile_net = CNN(conv_activation="agile_relu", dense_activation="agile_sigmoid")
    plain_net = CNN(conv_activation="agile_relu", dense_activation="sigmoid")
    # Compiled: op by op, the CNN's every op would compile on its own (seconds).
    params = jax.device_get(jax.jit(agile_net.init)(jax.random.key(0), images[:1])["params"])
    rng = np.random.default_rng(0)
    params["hidden_act"]["a"] = rng.uniform(0.2, 2.0, 30).astype(np.float32)  # as if trained
    params["hidden_act"]["b"] = rng.normal(0, 0.5, 30).astype(np.float32)
    agile_logits = jax.jit(agile_net.apply)({"params": params}, images)
    plain_apply = jax.jit(plain_net.apply)
    folded = fold(params, [Link("hidden", "hidden_act", "output")], strict=False).params
    assert "hidden_act" not in folded and "conv_act_0" in folded
    np.testing.assert_allclose(plain_apply({"params": folded}, images), agile_logits,
                               rtol=1e-5, atol=1e-5)
    unfolded = dict(params)
    del unfolded["hidden_act"]
    assert not np.allclose(plain_apply({"params": unfolded}, images), agile_logits, atol=1e-3)


@pytest.mark.slow
def test_trained_agile_dense_network_equals_its_folded_plain_twin():
    """After real training steps (a and b moved by their gradients), the fold still holds."""

    config = config_lib.get_config(12)  # agile ReLU conv, agile sigmoid dense
    config.agile_learning_rate = 0.05  # so a and b move visibly in a few steps
    state = steps_lib.create_train_state(config, jax.random.key(0))
    rng = np.random.default_rng(0)
    for _ in range(5):
        batch = {"inputs": rng.uniform(0, 1, (32, 28, 28, 1)).astype(np.float32),
                 "targets": rng.integers(0, 10, 32).astype(np.int32)}
        state, _ = steps_lib.jit_train_step(state, batch)
    params = jax.device_get(state.params)
    assert np.abs(params["hidden_act"]["a"] - 1).max() > 0.05
    assert np.abs(params["hidden_act"]["b"]).max() > 0.05
    model = create_model(config)
    plain = model.clone(dense_activation="sigmoid")
    folded = fold(params, [Link("hidden", "hidden_act", "output")], strict=False).params
    images = jax.random.uniform(jax.random.key(1), (16, 28, 28, 1))
    # Each forward pass as one program at level 0 (op by op, each op compiled on its own).
    forward = [jax.jit(m.apply).lower(v, images).compile(FAST_COMPILE)(v, images)
               for m, v in ((plain, {"params": folded}), (model, {"params": params}))]
    np.testing.assert_allclose(*forward, rtol=1e-5, atol=1e-5)


def test_groups_name_their_trials():
    dense_only = study.GROUPS_BY_NAME["dense_only"]
    assert [t.name for t in dense_only.trials()] == ["sigmoid", "agile_sigmoid"]
    assert dense_only.trial_name("relu", "agile_sigmoid") == "agile_sigmoid"
    table1 = study.GROUPS_BY_NAME["table1"]
    trials = table1.trials(seeds=2, num_epochs=3)
    assert trials[11].name == "combo_12" and trials[11].config.num_seeds == 2
    assert trials[0].config.num_epochs == 3 and trials[0].config.test_every == 4


def test_a_group_of_many_seeds_trains_in_blocks_that_runs_can_share():
    """Table 1's 30 seeds: one trial per block of 10, block 0 in the trial's own folder; any
    seed range trains the blocks it covers; every range claims the folder with one setting."""
    group = study.GROUPS_BY_NAME["table1"]
    assert [(b.start, b.stop) for b in group.blocks()] == [(0, 10), (10, 20), (20, 30)]
    assert [(b.start, b.stop) for b in group.blocks(range(5, 23))] == [(5, 10), (10, 20),
                                                                         (20, 23)]
    trials = group.trials(range(10, 30))
    assert len(trials) == 24 and trials[0].name == "combo_01.seeds10-19"
    assert (trials[0].config.seed, trials[0].config.num_seeds) == (10, 10)
    assert trials[-1].name == "combo_12.seeds20-29" and trials[-1].config.seed == 20
    assert [t.name for t in group.trials(2)][:2] == ["combo_01", "combo_02"]
    assert study.Group.trial_of("combo_12.seeds10-19") == study.Group.trial_of("combo_12")
    assert group.settings(range(10, 30)) == group.settings(range(10)) == group.settings()
    assert group.settings(2) != group.settings()  # another number of seeds per trial
    small = study.GROUPS_BY_NAME["sgd"]
    assert [t.name for t in small.trials()] == ["combo_07", "combo_12"]
    assert small.settings()["seeds"] == 5


def test_the_new_groups_ask_what_the_issue_asks():
    """The a/b learning rates at 0.1x and 10x for the ReLU family, the field's baselines per
    channel in both layers, a plain network of combo 12's size; 10 seeds each (Table 1's)."""
    by_name = study.GROUPS_BY_NAME
    for name, rate in (("agile_lr_0.1x", 1e-4), ("agile_lr_10x", 1e-2)):
        config = by_name[name].base_config()
        assert config.agile_learning_rate == rate and config.learning_rate == 1e-3
        assert by_name[name].pairs == (COMBOS[10], COMBOS[11], COMBOS[12])
    baselines = by_name["baselines"]
    assert baselines.base_config().model.granularity == "channel"
    assert [conv for conv, _ in baselines.pairs] == ["prelu", "swish_beta", "apl:2",
                                                     "agile_relu"]
    assert all(conv == dense for conv, dense in baselines.pairs)
    capacity = by_name["capacity"].base_config()
    wide = CNN(dense_features=capacity.model.dense_features)
    shapes = jax.eval_shape(wide.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    combo12 = jax.eval_shape(CNN(conv_activation="agile_relu", dense_activation="agile_sigmoid")
                             .init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    count = lambda tree: sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))  # noqa: E731
    assert abs(count(shapes) - count(combo12)) < 10
    for name in ("agile_lr_0.1x", "agile_lr_10x", "baselines", "capacity"):
        assert by_name[name].seeds == 10
    for trial in by_name["baselines"].trials():
        config_lib.validate(trial.config)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_statistics_of_nan_or_inf_raise_instead_of_returning_a_p_value(bad):
    """#154, #155: a NaN std is not > 0 and NaN != 0, so paired_comparison returned p = 0."""
    with pytest.raises(ValueError, match="must be finite numbers"):
        stats.paired_comparison([0.1, bad, 0.3], [0.1, 0.2, 0.2])
    with pytest.raises(ValueError, match="must be finite numbers"):
        stats.paired_comparison([0.1, 0.2, 0.3], [bad, 0.2, 0.2])
    with pytest.raises(ValueError, match="must be finite numbers"):
        stats.holm([0.01, bad])
    with pytest.raises(ValueError, match="must be finite numbers"):
        stats.summarize([0.1, bad])
    with pytest.raises(ValueError, match="must be finite numbers"):
        stats.spearman([1.0, 2.0, bad], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="paired differences must be finite"):
        stats.paired_comparison([1e308, -1e308], [-1e308, 1e308])  # the differences overflow
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        stats.holm([0.5, 1.5])
    np.testing.assert_array_equal(stats.check_finite([1, 2.5]), [1.0, 2.5])


def test_summarize_and_spearman_match_scipy():
    summary = stats.summarize([0.1, 0.2, 0.3])
    low, high = scipy_stats.t.interval(0.95, 2, loc=0.2, scale=scipy_stats.sem([0.1, 0.2, 0.3]))
    assert summary["n"] == 3 and summary["mean"] == pytest.approx(0.2)
    assert summary["std"] == pytest.approx(0.1)
    assert (summary["ci_low"], summary["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert stats.summarize([]) is None
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    expected = scipy_stats.spearmanr(x, y)
    assert stats.spearman(x, y) == (pytest.approx(expected.statistic),
                                    pytest.approx(expected.pvalue))
    with pytest.raises(ValueError, match="equally long"):
        stats.spearman([1.0, 2.0], [1.0])


def test_group_trials_refuse_a_seed_count_below_one_and_bad_overrides():
    """#145: --seeds=0 silently trained each group's default seed count."""
    group = study.GROUPS_BY_NAME["dense_only"]
    for seeds in (0, -2):
        with pytest.raises(ConfigError, match=rf"seed count must be at least 1, got {seeds}"):
            group.trials(seeds)
    assert group.trials()[0].config.num_seeds == group.seeds
    assert group.trials(1)[0].config.num_seeds == 1
    with pytest.raises(ConfigError, match=r"Cannot set num_epochs to '2': .*cannot be casted"):
        group.trials(num_epochs="2")
    with pytest.raises(ConfigError, match=r"Unknown config section 'nosection' in the override "
                                          r"nosection.x"):
        group.trials(**{"nosection.x": 1})


def test_select_groups_refuses_none_unknown_and_repeated_names():
    """#146: an empty --groups trained nothing and still exported an empty study."""
    assert [g.name for g in study.select_groups(["sgd", "table1"])] == ["sgd", "table1"]
    for names in ([], [""], [" ", ""]):
        with pytest.raises(ConfigError, match="--groups is empty: name at least one of table1, "):
            study.select_groups(names)
    with pytest.raises(ConfigError, match=r"Unknown group\(s\) bogus. Valid: table1, "):
        study.select_groups(["table1", "bogus"])
    with pytest.raises(ConfigError, match="--groups lists sgd twice"):
        study.select_groups(["sgd", "table1", "sgd"])


def test_parse_overrides_takes_json_values_lists_included():
    """#148: a list value was split at its comma; #142: a value that is not JSON is named."""
    assert study.split_overrides('a=[8,4],b="x,y",c={"k": [1, 2]}, d=2') == [
        "a=[8,4]", 'b="x,y"', 'c={"k": [1, 2]}', "d=2"]
    assert study.split_overrides('s="a\\",b",t=1') == ['s="a\\",b"', "t=1"]
    assert study.parse_overrides(["num_epochs=2,data.train_size=200",
                                  "model.conv_features=[8,4]", 'optimizer="sgd",x=None,y=']) == {
        "num_epochs": 2, "data.train_size": 200, "model.conv_features": [8, 4],
        "optimizer": "sgd", "x": None, "y": None}
    assert study.parse_overrides([]) == study.parse_overrides([""]) == {}
    with pytest.raises(ConfigError, match=r"--overrides num_epochs=abc: the value 'abc' is not "
                                          r"JSON \(Expecting value\); write numbers"):
        study.parse_overrides(["num_epochs=abc"])
    with pytest.raises(ConfigError, match="--overrides takes name=value items, got 'num_epochs'"):
        study.parse_overrides(["num_epochs"])
    with pytest.raises(ConfigError, match="--overrides sets seed twice"):
        study.parse_overrides(["seed=1", "seed=2"])
    trials = study.GROUPS_BY_NAME["table1"].trials(
        2, **study.parse_overrides(["model.conv_features=[8,4]"]))
    assert tuple(trials[0].config.model.conv_features) == (8, 4)


def test_paired_power_matches_the_standard_tables():
    """Paired t-test, α = 0.05 two-sided, 80% power: an effect of 0.5 sd needs 34 pairs and
    0.8 sd 15 (G*Power's values); the MDE inverts the power; r is Pearson's."""
    assert stats.seeds_needed(0.5, 1.0) == 34 and stats.seeds_needed(0.8, 1.0) == 15
    assert stats.paired_power(0.5, 1.0, 34) >= 0.8 > stats.paired_power(0.5, 1.0, 33)
    mde = stats.min_detectable_effect(0.01, 30)
    assert stats.paired_power(mde, 0.01, 30) == pytest.approx(0.8, abs=1e-6)
    assert stats.min_detectable_effect(0.01, 30, alpha=0.005) > mde  # a stricter level
    assert stats.seeds_needed(0.0, 1.0) == stats.MAX_SEEDS + 1
    assert stats.paired_power(5.0, 1e-4, 3) == 1.0  # far in the tail: still a number
    x = np.array([0.1, 0.2, 0.3, 0.5])
    assert stats.pair_correlation(x, 2 * x + 1) == pytest.approx(1.0)
    assert stats.pair_correlation(x, np.ones(4)) == 0.0
    with pytest.raises(ValueError, match="finite"):
        stats.seeds_needed(float("nan"), 1.0)
    with pytest.raises(ValueError, match="n >= 2 and std > 0"):
        stats.min_detectable_effect(0.0, 10)


# ---------------------------------------------------------------------------------------------
# The comparison families: data beside the groups.


@pytest.mark.parametrize("family", study.FAMILIES, ids=lambda f: f.name)
def test_every_family_compares_trials_of_declared_groups_within_one_task(family):
    """Each arm is a trial a declared group trains; a comparison's arms differ and share a task
    (seeds pair only within one), and have the seeds the family's rule asks for; names are
    unique within a family (the report and the `beside` column find comparisons by name)."""
    for comparison in family.comparisons:
        arms = (comparison.first, comparison.second)
        groups = [study.GROUPS_BY_NAME[arm.group] for arm in arms]
        assert arms[0] != arms[1]
        for arm, group in zip(arms, groups, strict=True):
            assert arm.trial in {group.trial_name(*pair) for pair in group.pairs}, arm
        assert groups[0].task == groups[1].task
        if family.seeds is not None:
            assert all(set(family.seeds) <= set(range(group.seeds)) for group in groups)
    names = [comparison.name for comparison in family.comparisons]
    assert len(set(names)) == len(names) and names
    assert all(name in study.GROUPS_BY_NAME for name in family.groups)
    assert family.power in (study.IN_SECTION, study.POWER_SECTION, None)
    assert family.findings in ("themes", "table1")
    if family.findings == "table1":  # the paper's table: its rows, its differences
        assert all(c.paper_difference is not None and c.first.group == c.second.group ==
                   "table1" for c in family.comparisons)
    if family.beside is not None:
        assert set(names) <= {c.name for c in study.FAMILIES_BY_NAME[family.beside].comparisons}


def test_the_families_show_every_group_once_in_the_reports_order():
    """Every group but table1 (Table 1's own section) has its tables in exactly one family's
    section; Table 1's family is PAIRED_COMPARISONS with the paper's differences; empty
    titles default to the section's."""
    shown = [name for family in study.FAMILIES for name in family.groups]
    assert sorted(shown) == sorted(group.name for group in study.GROUPS if group.name != "table1")
    assert [family.name for family in study.FAMILIES] == [
        "table1", "lr", "fashion_table1", "fashion_lr", "resnet", "transformer", "baselines",
        "ablations"]
    assert len(study.FAMILIES_BY_NAME) == len(study.FAMILIES)
    table1 = study.FAMILIES_BY_NAME["table1"]
    assert [(c.first.trial, c.second.trial) for c in table1.comparisons] == [
        (f"combo_{agile:02d}", f"combo_{plain:02d}") for agile, plain in study.PAIRED_COMPARISONS]
    assert table1.comparisons[0].paper_difference == pytest.approx(0.16259 - 0.18850)
    assert {c.first.group for c in table1.comparisons} == {"table1"}
    lr = study.FAMILIES_BY_NAME["lr"]
    assert lr.power_title == lr.conclusion_title == lr.title != lr.figure_title
    fashion_lr = study.FAMILIES_BY_NAME["fashion_lr"]
    assert (fashion_lr.conclusion_title == fashion_lr.power_title == fashion_lr.figure_title
            == fashion_lr.title)
    assert lr.contents == "the learning rate of a and b" and lr.unit == study.NATS
    tasks = {group.name: group.task for group in study.GROUPS}
    assert {name for name, task in tasks.items() if task != "mnist"} == {
        "fashion_table1", "fashion_agile_lr_0.1x", "resnet", "resnet_agile_lr_0.1x",
        "transformer", "transformer_agile_lr_0.1x", "transformer_scalar"}


def test_the_issue_30_groups_train_what_they_say():
    """The a/b-rate curve's groups train combos 10-12 at their multiple of the weights' rate
    on MNIST, in the curve's order; Fashion-MNIST's groups train the paper's CNN on
    Fashion-MNIST with the paper's schedule, Table 1's twelve rows and the ReLU family at
    0.1x; the Fashion family sits beside MNIST's Table 1 with the same comparisons."""
    base = study.GROUPS_BY_NAME["table1"].base_config()
    multiples = []
    for name, _, multiple in study.LR_CURVE:
        config = study.GROUPS_BY_NAME[name].base_config()
        assert config.agile_learning_rate == pytest.approx(multiple * config.learning_rate)
        assert config.data.name == "mnist"
        if name != "table1":
            assert study.GROUPS_BY_NAME[name].pairs == (COMBOS[10], COMBOS[11], COMBOS[12])
        multiples.append(multiple)
    assert multiples == sorted(multiples) and len(multiples) == 6
    fashion = study.GROUPS_BY_NAME["fashion_table1"]
    config = fashion.base_config()
    assert config.data.name == "fashion_mnist" and fashion.pairs == tuple(COMBOS.values())
    assert {k: v for k, v in config.items() if k != "data"} == {
        k: v for k, v in base.items() if k != "data"}
    assert {k: v for k, v in config.data.items() if k != "name"} == {
        k: v for k, v in base.data.items() if k != "name"}
    low = study.GROUPS_BY_NAME["fashion_agile_lr_0.1x"].base_config()
    assert low.data.name == "fashion_mnist" and low.agile_learning_rate == pytest.approx(1e-4)
    family = study.FAMILIES_BY_NAME["fashion_table1"]
    assert family.beside == "table1" and family.findings == "themes"
    assert [c.name for c in family.comparisons] == [
        c.name for c in study.FAMILIES_BY_NAME["table1"].comparisons]
    fashion_lr = study.FAMILIES_BY_NAME["fashion_lr"]
    assert {arm.group for c in fashion_lr.comparisons for arm in (c.first, c.second)} == {
        "fashion_table1", "fashion_agile_lr_0.1x"}


def test_a_new_question_is_one_entry_of_data():
    """Issue #30's questions fit the same types: Table 1 on another group, beside MNIST's
    (the same comparison names, no paper difference); the a/b-rate curve at more rates; a
    language model's loss in bits."""
    fashion = study.table1_comparisons("fashion_table1", paper=False)
    assert [c.name for c in fashion] == [c.name for c in
                                         study.FAMILIES_BY_NAME["table1"].comparisons]
    assert all(c.paper_difference is None and c.first.group == c.second.group ==
               "fashion_table1" for c in fashion)
    assert [c.theme for c in fashion] == [c.theme for c in study.table1_comparisons()]
    curve = study.rate_comparisons((("lr_0.01x", "a, b at 0.01x"), ("table1", "a, b at 1x"),
                                    ("lr_0.3x", "a, b at 0.3x")))
    assert len(curve) == 3 * 3 + 2 * 3
    assert curve[0].name == "combo 10 (a, b at 0.01x) − combo 7"
    assert curve[-1].name == "combo 12 (a, b at 0.3x) − combo 12 (a, b at 1x)"
    family = study.Family("curve", "The a/b learning-rate curve", curve, unit=study.BITS,
                          beside="lr")
    assert family.arm_groups() == ["lr_0.01x", "table1", "lr_0.3x"]
    assert family.unit.scale == pytest.approx(1 / math.log(2))
    assert family.contents == "the a/b learning-rate curve"


def test_the_resnet_and_transformer_groups_train_their_presets_activation_by_activation():
    """A one-activation model's group trains its preset (configs/resnet.py's or
    configs/transformer.py's config) with each pair's one activation, trials named by it;
    overrides apply on top; the 0.1x groups train a and b at a tenth of their task's rate; a
    pair with two activations or none is refused in one line."""
    for name, preset in (("resnet", config_lib.resnet_config),
                         ("resnet_agile_lr_0.1x", config_lib.resnet_config),
                         ("transformer", config_lib.transformer_config),
                         ("transformer_scalar", config_lib.transformer_config)):
        group = study.GROUPS_BY_NAME[name]
        for trial, (conv, dense) in zip(group.trials(), group.pairs, strict=True):
            activation = dense if conv == study.NO_LAYER else conv
            expected = preset(activation)
            for field, value in group.overrides.items():
                section, _, key = field.rpartition(".")
                (expected[section] if section else expected)[key] = value
            expected.num_seeds = group.seeds
            assert trial.config.to_dict() == expected.to_dict(), name
            assert trial.name == group.trial_name(conv, dense)
    for name, preset in (("resnet_agile_lr_0.1x", config_lib.resnet_config),
                         ("transformer_agile_lr_0.1x", config_lib.transformer_config)):
        rate = preset().learning_rate  # the 0.1x arms follow their task's rate
        assert study.GROUPS_BY_NAME[name].base_config().agile_learning_rate == pytest.approx(
            rate / 10), name
    assert study.GROUPS_BY_NAME["resnet"].trial_name("swish_beta", "-") == "swish_beta"
    assert study.GROUPS_BY_NAME["transformer_scalar"].trial_name("-", "agile_gelu") == (
        "agile_gelu_scalar")
    bad = dataclasses.replace(study.GROUPS_BY_NAME["resnet"], pairs=(("relu", "gelu"),))
    with pytest.raises(ConfigError, match="one activation and one '-'"):
        bad.trials()
