"""ray_app/sweeps/space.py alone: which paths a space may vary, which domains it takes, grids, and
how a trial's values are put into its job body."""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ray_app.sweeps import space as spaces
from ray_app.sweeps.space import Domain, SpaceError


def refused(raw, search="random") -> SpaceError:
    with pytest.raises(SpaceError) as info:
        spaces.parse_space(raw, search)
    return info.value


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize("path", ["learning_rate", "batch_size", "image_size", "config.k", "advanced_config.k",
                                  "config.mosaic", "config._private", "advanced_config.lr0", "config.A_1",
                                  "config." + "k" * 64])
def test_every_kind_of_path_is_accepted(path):
    spaces.check_path(path)
    assert spaces.parse_space({path: {"choice": [1, 2]}}, "random") == {path: Domain("choice", (1, 2))}


def test_epochs_is_refused_as_the_budget():
    exc = refused({"epochs": {"choice": [1, 2]}})
    assert exc.path == "epochs"
    assert "budget" in exc.msg and "max_t" in exc.msg and "`job`" in exc.msg


@pytest.mark.parametrize("path", ["model_name", "num_gpus", "num_cpus", "dataset_id", "framework", "workers",
                                  "project_id", "config", "advanced_config", "Learning_rate", "", "foo.bar",
                                  "resources.num_gpus"])
def test_unknown_fields_are_refused_naming_what_a_space_varies(path):
    exc = refused({path: {"choice": [1]}})
    assert exc.path == path
    assert f"unknown field {path!r}" in exc.msg
    assert "learning_rate" in exc.msg and "config.<key>" in exc.msg


@pytest.mark.parametrize("path", ["config.a.b", "advanced_config.a.b", "config.", "advanced_config.",
                                  "config.1abc", "config.a-b", "config.a b", "config.é", "config." + "k" * 65,
                                  "config.lr\n", "advanced_config.x\n"])
def test_nested_keys_are_one_level_identifiers(path):
    exc = refused({path: {"choice": [1]}})
    assert exc.path == path
    assert "identifiers" in exc.msg


def test_an_empty_space_and_too_many_fields_are_refused():
    assert refused({}).path == ""
    many = {f"config.k{i}": {"choice": [1]} for i in range(spaces.MAX_PARAMS + 1)}
    exc = refused(many)
    assert exc.path == "" and str(spaces.MAX_PARAMS) in exc.msg
    assert len(spaces.parse_space(dict(list(many.items())[:spaces.MAX_PARAMS]), "random")) == spaces.MAX_PARAMS


# ---------------------------------------------------------------- domains


@pytest.mark.parametrize(("raw", "words"), [
    ({"choice": []}, "empty choice"),
    ({"choice": [1, 2, 1]}, "twice"),
    ({"choice": ["a", "a"]}, "twice"),
    ({"choice": [{"a": 1}]}, "numbers, text, booleans or null"),
    ({"choice": [[1, 2]]}, "numbers, text, booleans or null"),
    ({"choice": [1.0, math.nan]}, "not a JSON number"),
    ({"choice": [math.inf]}, "not a JSON number"),
    ({"choice": list(range(spaces.MAX_CHOICES + 1))}, f"at most {spaces.MAX_CHOICES}"),
    ({"choice": "abc"}, "takes a list"),
    ({"uniform": [1.0, 1.0]}, "low < high"),
    ({"uniform": [2.0, 1.0]}, "low < high"),
    ({"uniform": [1.0]}, "two numbers"),
    ({"uniform": [1.0, 2.0, 3.0]}, "two numbers"),
    ({"uniform": ["0", 1]}, "two numbers"),
    ({"uniform": [False, True]}, "two numbers"),
    ({"uniform": [0.0, math.nan]}, "finite"),
    ({"uniform": [math.nan, 1.0]}, "finite"),
    ({"uniform": [-math.inf, 1.0]}, "finite"),
    ({"loguniform": [0, 1]}, "0 < low"),
    ({"loguniform": [0.0, 1e-3]}, "0 < low"),
    ({"loguniform": [-1e-3, 1e-1]}, "0 < low"),
    ({"loguniform": [1e-1, 1e-3]}, "low < high"),
    ({"loguniform": [math.nan, 1.0]}, "finite"),
    ({"int": [1.0, 5.0]}, "integer bounds"),
    ({"int": [1, 5.5]}, "integer bounds"),
    ({"int": [5, 5]}, "low < high"),
    ({"int": [math.nan, 5]}, "finite"),
    ({"normal": [0, 1]}, "unknown domain 'normal'"),
    ({"choice": [1], "uniform": [0, 1]}, "a domain is one of"),
    ({}, "a domain is one of"),
    ([1, 2], "a domain is one of"),
    (0.1, "a domain is one of"),
])
def test_bad_domains_are_refused_at_their_path(raw, words):
    exc = refused({"config.k": raw})
    assert exc.path == "config.k"
    assert words in exc.msg, exc.msg


def test_the_loguniform_message_says_why():
    exc = refused({"learning_rate": {"loguniform": [0, 0.1]}})
    assert exc.path == "learning_rate" and "logarithm of 0 is undefined" in exc.msg


@pytest.mark.parametrize(("raw", "domain"), [
    ({"choice": [1, 1.0, True, "1", None]}, Domain("choice", (1, 1.0, True, "1", None))),
    ({"choice": list(range(spaces.MAX_CHOICES))}, Domain("choice", tuple(range(spaces.MAX_CHOICES)))),
    ({"uniform": [-1, 1]}, Domain("uniform", (-1, 1))),
    ({"uniform": [0.1, 0.2]}, Domain("uniform", (0.1, 0.2))),
    ({"loguniform": [1e-5, 1]}, Domain("loguniform", (1e-5, 1))),
    ({"int": [-3, 3]}, Domain("int", (-3, 3))),
])
def test_good_domains_are_parsed(raw, domain):
    assert spaces.parse_domain("config.k", raw) == domain
    assert domain.as_json() == raw


# ---------------------------------------------------------------- grid


@pytest.mark.parametrize("kind", ["uniform", "loguniform", "int"])
def test_grid_search_takes_choices_only(kind):
    raw = {"batch_size": {"choice": [8, 16]}, "learning_rate": {kind: [1, 2]}}
    exc = refused(raw, "grid")
    assert exc.path == "learning_rate" and f"not {kind}" in exc.msg
    assert spaces.parse_space(raw, "random")["learning_rate"].kind == kind  # other searches take ranges
    assert spaces.parse_space(raw, "optuna")["learning_rate"].kind == kind


def test_a_grid_over_max_grid_is_refused_with_its_size():
    raw = {f"config.k{i}": {"choice": [0, 1]} for i in range(11)}
    exc = refused(raw, "grid")
    assert exc.path == "" and "2048" in exc.msg and str(spaces.MAX_GRID) in exc.msg
    assert len(spaces.parse_space(raw, "random")) == 11  # random search samples: no grid to count
    exactly = {"config.a": {"choice": list(range(10))}, "config.b": {"choice": list(range(100))}}
    assert spaces.grid_size(spaces.parse_space(exactly, "grid")) == spaces.MAX_GRID
    over = {"config.a": {"choice": list(range(11))}, "config.b": {"choice": list(range(91))}}
    assert "1001" in refused(over, "grid").msg


def test_grid_is_every_combination_first_path_slowest():
    space = spaces.parse_space({"learning_rate": {"choice": [0.1, 0.01]}, "config.x": {"choice": ["a", "b", "c"]},
                                "batch_size": {"choice": [8]}}, "grid")
    combos = spaces.grid(space)
    assert spaces.grid_size(space) == len(combos) == 6
    assert combos == [{"learning_rate": lr, "config.x": x, "batch_size": 8}
                      for lr in (0.1, 0.01) for x in ("a", "b", "c")]
    assert [list(c) for c in combos] == [["learning_rate", "config.x", "batch_size"]] * 6


# ---------------------------------------------------------------- apply, corners


def test_apply_puts_values_at_their_paths_and_copies_the_base():
    base = {"framework": "fake", "learning_rate": 0.01, "batch_size": 16, "config": {"mosaic": 1.0, "keep": [1]},
            "advanced_config": {"amp": True}}
    before = copy.deepcopy(base)
    out = spaces.apply(base, {"learning_rate": 0.1, "config.mosaic": 0.0, "config.new": "x",
                              "advanced_config.amp": False, "image_size": 320})
    assert out == {"framework": "fake", "learning_rate": 0.1, "batch_size": 16, "image_size": 320,
                   "config": {"mosaic": 0.0, "keep": [1], "new": "x"}, "advanced_config": {"amp": False}}
    assert base == before
    assert out["config"] is not base["config"] and out["advanced_config"] is not base["advanced_config"]
    out["config"]["later"] = 1
    assert "later" not in base["config"]


def test_apply_to_a_body_without_config_makes_one():
    out = spaces.apply({"epochs": 2}, {"config.x": 1})
    assert out["config"] == {"x": 1} and out["epochs"] == 2
    assert spaces.apply({"config": None}, {"advanced_config.y": 2})["advanced_config"] == {"y": 2}
    assert spaces.apply({"epochs": 2}, {}) == {"epochs": 2, "config": {}, "advanced_config": {}}


def test_corners_are_every_choice_and_both_ends_of_a_range():
    space = spaces.parse_space({"batch_size": {"choice": [8, 16, 32]}, "learning_rate": {"loguniform": [1e-4, 1e-1]},
                                "image_size": {"int": [320, 640]}, "config.m": {"uniform": [0, 1]}}, "random")
    assert spaces.corners(space) == [("batch_size", 8), ("batch_size", 16), ("batch_size", 32),
                                     ("learning_rate", 1e-4), ("learning_rate", 1e-1),
                                     ("image_size", 320), ("image_size", 640), ("config.m", 0.0), ("config.m", 1.0)]


def test_a_continuous_range_s_corners_are_floats():
    # Tune's uniform and loguniform sample floats whatever the bounds' type: a field that takes
    # integers only (batch_size) must be refused for them, so the corners are floats
    space = spaces.parse_space({"batch_size": {"uniform": [8, 64]}, "image_size": {"loguniform": [32, 640]},
                                "config.k": {"int": [1, 3]}}, "random")
    corners = spaces.corners(space)
    assert [type(v) for _, v in corners] == [float, float, float, float, int, int]


# ---------------------------------------------------------------- the property


_PATHS = st.sampled_from(["learning_rate", "batch_size", "image_size"]) | st.builds(
    lambda root, key: f"{root}.{key}", st.sampled_from(spaces.NESTED_ROOTS),
    st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,8}\Z"))
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)
_KEYS = st.sampled_from(["framework", "epochs", "learning_rate", "batch_size", "image_size", "model_name"])


def _read(body, path):
    root, dot, key = path.partition(".")
    return body[root][key] if dot else body[path]


@given(top=st.dictionaries(_KEYS, _JSON, max_size=5),
       config=st.none() | st.dictionaries(st.from_regex(r"\A[a-z_]{1,6}\Z"), _JSON, max_size=4),
       advanced=st.none() | st.dictionaries(st.from_regex(r"\A[a-z_]{1,6}\Z"), _JSON, max_size=4),
       params=st.dictionaries(_PATHS, _SCALARS, max_size=6))
def test_apply_then_read_back_gives_each_value_and_leaves_the_rest(top, config, advanced, params):
    body = dict(top)
    if config is not None:
        body["config"] = config
    if advanced is not None:
        body["advanced_config"] = advanced
    before = copy.deepcopy(body)
    out = spaces.apply(body, params)
    assert body == before  # the base is not touched
    for path, value in params.items():
        assert _read(out, path) is value
    for key, value in body.items():  # every other top-level key as it was
        if key not in params and key not in spaces.NESTED_ROOTS:
            assert out[key] == value
    for root in spaces.NESTED_ROOTS:  # every other nested key as it was
        for key, value in (body.get(root) or {}).items():
            if f"{root}.{key}" not in params:
                assert out[root][key] == value
        set_here = {p.partition(".")[2] for p in params if p.startswith(root + ".")}
        assert set(out[root]) == set(body.get(root) or {}) | set_here
    assert set(out) == set(body) | {p for p in params if "." not in p} | set(spaces.NESTED_ROOTS)
