"""The comparison's planning, statistics and report rendering, without training anything."""

from __future__ import annotations

import numpy as np
import pytest

from neggen_core.compare import plan
from neggen_core.compare.report import Bullets, Figure, Heading, Table, html_page, markdown
from neggen_core.compare.stats import holm, paired_test
from neggen_core.config import load_config, with_settings
from neggen_core.errors import ConfigError


def test_paired_test_matches_the_exact_sign_flip_distribution() -> None:
    # diffs 1, 2, 3: of the 8 sign patterns only +++ and --- reach |mean| 2, so p = 2/8
    result = paired_test(
        np.array([1.0, 2.0, 3.0]),
        np.zeros(3),
        method="a",
        baseline="b",
        metric="m",
        resamples=20000,
        seed=1,
    )
    assert result.difference == pytest.approx(2.0)
    assert result.p_value == pytest.approx(0.25, abs=0.01)
    assert result.ci_low < result.difference < result.ci_high


def test_paired_test_of_equal_and_of_clearly_different_methods() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(500)
    same = paired_test(a, a, method="a", baseline="a", metric="m", resamples=1000)
    assert same.difference == 0 and same.p_value == 1.0
    better = paired_test(a + 0.1, a, method="a", baseline="b", metric="m", resamples=1000)
    assert better.p_value == pytest.approx(1 / 1001)
    assert better.relative == pytest.approx(0.1 / a.mean())
    with pytest.raises(ValueError, match="equal non-empty"):
        paired_test(a, a[:10], method="a", baseline="b", metric="m", resamples=100)


def test_methods_parse_into_train_settings() -> None:
    config = load_config(None)
    methods = plan.parse_methods(config)
    assert plan.Method("lightgcn", "dns") in methods and plan.Method("mf", "neggen") in methods
    assert plan.Method("lightgcn", "dns").settings() == {
        "train.model": "lightgcn",
        "train.sampler": "dns",
    }
    ablation = plan.Method("lightgcn", "neggen[no_causal]")
    assert (ablation.base, ablation.ablation) == ("neggen", "no_causal")
    run = plan.Run(ablation, 1000, (("train.neggen.effect_weight", 0.1),))
    train = run.config(config).train
    assert (train.model, train.backbone, train.seed) == ("neggen", "lightgcn", 1000)
    assert train.neggen.ablation == "no_causal" and train.neggen.effect_weight == 0.1
    assert plan.seeds(config) == (999, 1000, 1001)


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        ({"lightgcn": ["rnss"]}, "unknown method 'rnss'"),
        ({"lightgcn": ["dns[no_causal]"]}, "unknown method"),
        ({"lightgcn": ["neggen[nothing]"]}, "unknown method"),
        ({"gru": ["rns"]}, "unknown backbone 'gru'"),
    ],
)
def test_unknown_methods_are_named(methods: dict[str, list[str]], message: str) -> None:
    config = with_settings(load_config(None), {"compare.methods": methods})
    with pytest.raises(ConfigError, match=message):
        plan.check(config)


def test_a_grid_varies_train_keys_that_exist() -> None:
    config = load_config(None)
    with pytest.raises(ConfigError, match="not a train setting"):
        plan.check(with_settings(config, {"compare.grid": {"rns": {"ingest.k_core": [5, 10]}}}))
    with pytest.raises(ConfigError, match="unknown key 'pooll'"):
        plan.check(
            with_settings(config, {"compare.grid": {"dns": {"train.samplers.dns.pooll": [1]}}})
        )
    points = plan.grid_points(config, plan.Method("lightgcn", "neggen"))
    assert len(points) == 4 and points[0] == (
        ("train.neggen.effect_weight", 0.4),
        ("train.neggen.generated_weight", 0.25),
    )
    assert plan.grid_points(config, plan.Method("lightgcn", "rns")) == [()]


def test_every_method_searches_the_same_budget() -> None:
    config = load_config(None)
    wide = with_settings(
        config,
        {
            "compare.budget": 3,
            "compare.grid": {
                "neggen": {"train.neggen.effect_weight": [0.1, 0.4, 1.0, 2.0]},
                "dns": {"train.samplers.dns.pool": [4, 8]},
            },
        },
    )
    neggen = plan.search_points(wide, plan.Method("lightgcn", "neggen"))
    ablation = plan.search_points(wide, plan.Method("mf", "neggen[real_only]"))
    grid = plan.grid_points(wide, plan.Method("lightgcn", "neggen"))
    # a seeded sample of the budget, in grid order, the same for NegGen and its ablations
    assert len(neggen) == 3 and neggen == ablation and neggen == sorted(neggen, key=grid.index)
    assert neggen == plan.search_points(wide, plan.Method("lightgcn", "neggen"))
    reseeded = with_settings(wide, {"train.seed": 1})
    samples = {
        tuple(
            plan.search_points(
                with_settings(reseeded, {"train.seed": s}), plan.Method("lightgcn", "neggen")
            )
        )
        for s in range(20)
    }
    assert len(samples) > 1
    # a grid no larger than the budget is searched whole
    assert len(plan.search_points(wide, plan.Method("lightgcn", "dns"))) == 2
    assert plan.search_points(wide, plan.Method("lightgcn", "rns")) == [()]


def test_a_backbone_grid_is_searched_with_every_baseline_on_it_and_inherited_by_neggen() -> None:
    config = with_settings(
        load_config(None),
        {
            "compare.methods": {"freedom": ["rns", "dns", "neggen"], "lightgcn": ["dns"]},
            "compare.grid": {
                "freedom": {"train.freedom.dropout": [0.8, 0.9]},
                "dns": {"train.samplers.dns.pool": [4, 8]},
                "neggen": {"train.neggen.effect_weight": [0.4]},
            },
        },
    )
    dropout = [("train.freedom.dropout", 0.8), ("train.freedom.dropout", 0.9)]
    assert [p for (p,) in plan.grid_points(config, plan.Method("freedom", "rns"))] == dropout
    dns = plan.grid_points(config, plan.Method("freedom", "dns"))
    assert len(dns) == 4 and {p[0] for p in dns} == set(dropout)
    assert len(plan.grid_points(config, plan.Method("lightgcn", "dns"))) == 2
    assert plan.grid_points(config, plan.Method("freedom", "neggen")) == [
        (("train.neggen.effect_weight", 0.4),)
    ]
    # NegGen searches its own grid on the values its best baseline chose
    scores: dict[plan.Run, float] = {}
    while True:
        built, todo = plan.advance(config, scores)
        if not todo:
            break
        for run in todo:
            params = dict(run.params)
            best = params.get("train.freedom.dropout") == 0.9 and run.method.name == "dns"
            scores[run] = 0.5 if best else 0.1
    chosen = dict(built.chosen[plan.Method("freedom", "neggen")])
    assert chosen["train.sampler"] == "dns" and chosen["train.freedom.dropout"] == 0.9
    with pytest.raises(ConfigError, match=r"compare\.grid\.ngcf: not a method"):
        plan.check(with_settings(config, {"compare.grid": {"ngcf": {"train.seed": [1]}}}))


def test_random_intervention_needs_control_negatives() -> None:
    config = with_settings(
        load_config(None), {"compare.methods": {"lightgcn": ["neggen[random_intervention]"]}}
    )
    plan.check(config)  # on by default
    with pytest.raises(ConfigError, match=r"set negatives\.controls: true"):
        plan.check(with_settings(config, {"negatives.controls": False}))


def test_restrict_by_methods_and_backbones() -> None:
    config = load_config(None)
    only_mf = plan.restrict(config, None, ["mf"])
    assert only_mf.compare.methods == {
        "mf": ("rns", "dns", "neggen", "neggen[real_only]", "neggen[random_intervention]")
    }
    both = plan.restrict(config, ["rns", "neggen"], None)
    assert both.compare.methods == {"lightgcn": ("rns", "neggen"), "mf": ("rns", "neggen")}
    with pytest.raises(ConfigError, match="unknown backbone"):
        plan.restrict(config, None, ["bert"])


def test_markdown_and_html_say_the_same() -> None:
    blocks = [
        Heading(1, "Title <x>"),
        Bullets(("**bold** claim", "plain")),
        Table(("Method", "R@20"), (("a|b", "0.1"), ("c", "0.2")), frozenset({(1, 1)})),
        Figure("f.png", "a figure"),
    ]
    md = markdown(blocks)
    assert "# Title <x>" in md and "| a\\|b | 0.1 |" in md and "| c | **0.2** |" in md
    assert "![a figure](f.png)" in md
    page = html_page("t", blocks, {"f.png": b"\x89PNG"})
    assert "<h1>Title &lt;x&gt;</h1>" in page and "<li><strong>bold</strong> claim</li>" in page
    assert "<td><strong>0.2</strong></td>" in page and "data:image/png;base64,iVBORw==" in page


def test_grid_sources_ablations_and_unlisted_backbones() -> None:
    config = load_config(None)
    methods = plan.parse_methods(config)
    lightgcn, mf = plan.Method("lightgcn", "neggen"), plan.Method("mf", "neggen")
    # an ablation is searched on its own, as NegGen is
    ablation = plan.Method("lightgcn", "neggen[no_causal]")
    assert plan.grid_source(config, methods, ablation) == ablation
    assert plan.grid_source(config, methods, mf) == mf
    only = with_settings(config, {"compare.grid_backbones": ["lightgcn"]})
    assert plan.grid_source(only, methods, mf) == lightgcn
    control = plan.Method("mf", "neggen[real_only]")
    assert plan.grid_source(only, methods, control) == plan.Method("lightgcn", "neggen[real_only]")
    assert plan.grid_source(only, methods, plan.Method("mf", "rns")) == plan.Method(
        "lightgcn", "rns"
    )
    mf_only = plan.parse_methods(with_settings(only, {"compare.methods": {"mf": ["dns"]}}))
    assert plan.grid_source(only, mf_only, plan.Method("mf", "dns")) == plan.Method("mf", "dns")
    with pytest.raises(ConfigError, match="grid_backbones: unknown backbone 'gcn'"):
        plan.check(with_settings(config, {"compare.grid_backbones": ["gcn"]}))


def test_merged_settings_keep_the_last_value_of_a_key() -> None:
    inherited = (("train.sampler", "dns"), ("train.samplers.dns.pool", 8))
    point = (("train.sampler", "rns"), ("train.neggen.effect_weight", 1.0))
    assert plan.merged(inherited, point) == (
        ("train.sampler", "rns"),
        ("train.samplers.dns.pool", 8),
        ("train.neggen.effect_weight", 1.0),
    )


def test_paired_test_agrees_with_scipy_permutation_test() -> None:
    """Our sign-flip test against scipy's paired permutation test (permutation_type="samples"
    swaps each user's two values, which flips the sign of the user's difference)."""
    from scipy.stats import permutation_test

    rng = np.random.default_rng(7)
    for shift, users in ((0.0, 300), (0.03, 300), (0.08, 120)):
        b = rng.random(users)
        a = np.clip(b + shift + rng.normal(0, 0.25, users), 0, 1)
        ours = paired_test(a, b, method="a", baseline="b", metric="m", resamples=40000, seed=3)
        theirs = permutation_test(
            (a, b),
            lambda x, y: np.mean(x - y),
            permutation_type="samples",
            n_resamples=40000,
            alternative="two-sided",
            random_state=5,
        )
        assert ours.p_value == pytest.approx(theirs.pvalue, abs=0.01), (shift, users)
    # exactly enumerable: 2^8 sign patterns, scipy enumerates them all
    a, b = rng.random(8), rng.random(8)
    exact = permutation_test(
        (a, b), lambda x, y: np.mean(x - y), permutation_type="samples", n_resamples=10**6
    ).pvalue
    ours = paired_test(a, b, method="a", baseline="b", metric="m", resamples=100000, seed=1)
    assert ours.p_value == pytest.approx(exact, abs=0.01)


def test_holm_adjusts_in_steps_and_keeps_the_order() -> None:
    # sorted 0.01, 0.02, 0.04, 0.30 -> x4, x3, x2, x1, each at least the one before
    assert holm([0.04, 0.01, 0.30, 0.02]) == pytest.approx([0.08, 0.04, 0.30, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_the_plan_advances_as_valid_scores_arrive() -> None:
    """Baselines' searches first; NegGen's once the baselines it can take from are chosen (not
    waiting on MixGCF, whose negatives it cannot take); each method's seeds once it is chosen."""
    config = with_settings(
        load_config(None),
        {
            "compare.methods": {"lightgcn": ["rns", "dns", "mixgcf", "neggen"]},
            "compare.seeds": 2,
            "compare.grid": {
                "dns": {"train.samplers.dns.pool": [4, 8]},
                "mixgcf": {"train.samplers.mixgcf.pool": [4, 8]},
                "neggen": {"train.neggen.effect_weight": [0.4, 1.0]},
            },
        },
    )
    rns, dns, mixgcf, neggen = (
        plan.Method("lightgcn", name) for name in ("rns", "dns", "mixgcf", "neggen")
    )
    first, second = plan.seeds(config)

    def run(method: plan.Method, seed: int, **params: object) -> plan.Run:
        return plan.Run(method, seed, tuple(params.items()))

    scores: dict[plan.Run, float] = {}
    _, todo = plan.advance(config, scores)
    dns4 = run(dns, first, **{"train.samplers.dns.pool": 4})
    dns8 = run(dns, first, **{"train.samplers.dns.pool": 8})
    mix4 = run(mixgcf, first, **{"train.samplers.mixgcf.pool": 4})
    mix8 = run(mixgcf, first, **{"train.samplers.mixgcf.pool": 8})
    assert todo == [run(rns, first), dns4, dns8, mix4, mix8]

    scores.update({run(rns, first): 0.10, dns4: 0.12, dns8: 0.11})  # MixGCF still running
    decided, todo = plan.advance(config, scores)
    assert decided.chosen[dns] == dns4.params and mixgcf not in decided.chosen
    inherited = {"train.sampler": "dns", "train.samplers.dns.pool": 4}
    assert todo == [
        mix4,
        mix8,
        run(neggen, first, **inherited, **{"train.neggen.effect_weight": 0.4}),
        run(neggen, first, **inherited, **{"train.neggen.effect_weight": 1.0}),
        run(rns, second),
        plan.Run(dns, second, dns4.params),
    ]

    scores.update(dict.fromkeys(todo, 0.05))
    better = todo[3]  # NegGen's second point
    scores[better] = 0.2
    whole, todo = plan.advance(config, scores)
    assert whole.chosen[neggen] == better.params and whole.chosen[mixgcf] == mix4.params
    assert todo == [
        plan.Run(mixgcf, second, mix4.params),
        plan.Run(neggen, second, whole.chosen[neggen]),
    ]
    scores.update(dict.fromkeys(todo, 0.05))
    assert plan.advance(config, scores)[1] == []


def test_neggen_does_not_wait_for_a_baseline_whose_choice_is_already_decided() -> None:
    """With one baseline NegGen can take, and a single point to search, its settings are known
    before its score: NegGen's search starts beside it (on Games, RNS trained alone for about
    20 minutes while the second worker idled), and the plan it ends with is the same."""
    config = with_settings(
        load_config(None),
        {
            "compare.methods": {"lightgcn": ["rns", "neggen"]},
            "compare.seeds": 1,
            "compare.grid": {"neggen": {"train.neggen.effect_weight": [0.4, 1.0]}},
        },
    )
    rns, neggen = plan.Method("lightgcn", "rns"), plan.Method("lightgcn", "neggen")
    (seed,) = plan.seeds(config)
    points = [
        plan.Run(neggen, seed, (("train.sampler", "rns"), ("train.neggen.effect_weight", w)))
        for w in (0.4, 1.0)
    ]
    _, todo = plan.advance(config, {})
    assert todo == [plan.Run(rns, seed, ()), *points]

    scores = dict.fromkeys(todo, 0.1)
    scores[points[1]] = 0.2
    whole, todo = plan.advance(config, scores)
    assert todo == []
    assert whole.inherited[neggen] == (("train.sampler", "rns"),)
    assert whole.chosen == {rns: (), neggen: points[1].params}

    # two baselines (or one with a grid): NegGen waits for their scores, as before
    for methods, grid in (
        (["rns", "dns", "neggen"], {}),
        (["dns", "neggen"], {"dns": {"train.samplers.dns.pool": [4, 8]}}),
    ):
        waiting = with_settings(
            config, {"compare.methods": {"lightgcn": methods}, "compare.grid": grid}
        )
        assert all(not run.method.is_neggen for run in plan.advance(waiting, {})[1])
