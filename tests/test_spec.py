import json

import pytest

from region_plugin.spec import RegionSpecError, format_layers, parse_region_layers, top_k_layers, uniform_layers

PAPER_32 = {
    16: list(range(0, 31, 2)),
    8: [0, 4, 8, 12, 18, 22, 26, 30],
    6: [0, 6, 12, 18, 24, 30],
    4: [0, 10, 20, 30],
}


@pytest.mark.parametrize("k,expected", sorted(PAPER_32.items()))
def test_uniform_reproduces_paper_lists_for_32_layers(k, expected):
    assert parse_region_layers(f"uniform:{k}", 32) == expected


def test_percent_is_uniform_of_rounded_k():
    assert parse_region_layers("25%", 32) == PAPER_32[8]
    assert parse_region_layers("50%", 32) == PAPER_32[16]
    assert parse_region_layers("12.5%", 32) == PAPER_32[4]
    assert parse_region_layers("25%", 8) == [0, 6]
    assert parse_region_layers("100%", 8) == list(range(8))


def test_uniform_edge_cases_are_sorted_unique_and_in_range():
    for n in range(1, 41):
        for k in range(1, n + 1):
            layers = uniform_layers(k, n)
            assert len(layers) == k and layers == sorted(set(layers))
            assert 0 <= layers[0] and layers[-1] < n
    assert uniform_layers(1, 32) == [0]
    assert uniform_layers(32, 32) == list(range(32))
    assert uniform_layers(31, 32) == list(range(31))


def test_explicit_indices_and_ranges():
    assert parse_region_layers("0,4,8,12,18,22,26,30", 32) == PAPER_32[8]
    assert parse_region_layers("0-3,28-31", 32) == [0, 1, 2, 3, 28, 29, 30, 31]
    assert parse_region_layers(" 30, 0 ,5-6", 32) == [0, 5, 6, 30]
    assert parse_region_layers("7", 8) == [7]


def test_format_round_trips():
    for spec in ("uniform:8", "0-3,28-31", "25%"):
        layers = parse_region_layers(spec, 32)
        assert parse_region_layers(format_layers(layers), 32) == layers


@pytest.mark.parametrize("spec,needle", [
    ("0,4,32", "layer 32 is out of range"),
    ("-1,4", "negative"),
    ("0,4,4", "listed twice"),
    ("0-3,2", "listed twice"),
    ("", "empty"),
    ("0,,4", "empty entry"),
    ("uniform:33", "K=33 is more than"),
    ("uniform:0", "at least 1"),
    ("uniform:x", "not a whole number"),
    ("abc", "cannot read"),
    ("3-1", "backwards"),
    ("0%", "(0, 100]"),
    ("150%", "(0, 100]"),
    ("1%", "rounds to 0"),
    ("top:8:bi", "top:K:METRIC:PATH"),
])
def test_errors_name_flag_value_n_and_an_example(spec, needle):
    with pytest.raises(RegionSpecError) as e:
        parse_region_layers(spec, 32)
    msg = str(e.value)
    assert needle in msg
    assert "--region_layers" in msg and repr(spec) in msg
    assert "num_hidden_layers=32" in msg and "e.g. --region_layers 0,4,8,12,18,22,26,30" in msg


def test_top_k_from_scores_file(tmp_path):
    scores = [0.9, 0.1, 0.5, 0.7, 0.2, 0.8, 0.3, 0.4]
    path = tmp_path / "scores.json"
    path.write_text(json.dumps({"num_layers": 8, "metrics": {"bi": scores, "angular": scores[::-1]}}))
    assert parse_region_layers(f"top:3:bi:{path}", 8) == [0, 3, 5]
    assert parse_region_layers(f"top:2:angular:{path}", 8) == [2, 7]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"bi": scores}))
    assert parse_region_layers(f"top:1:bi:{plain}", 8) == [0]
    assert top_k_layers([1.0, 1.0, 0.0], 1) == [0]  # ties go to the lower index


def test_top_k_errors(tmp_path):
    path = tmp_path / "scores.json"
    path.write_text(json.dumps({"metrics": {"bi": [0.1] * 6}}))
    with pytest.raises(RegionSpecError, match="has 6 values but the model has num_hidden_layers=8"):
        parse_region_layers(f"top:2:bi:{path}", 8)
    with pytest.raises(RegionSpecError, match="has no metric 'mm_bi'"):
        parse_region_layers(f"top:2:mm_bi:{path}", 6)
    with pytest.raises(RegionSpecError, match="does not exist"):
        parse_region_layers(f"top:2:bi:{tmp_path / 'nope.json'}", 6)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RegionSpecError, match="not valid JSON"):
        parse_region_layers(f"top:2:bi:{bad}", 6)
