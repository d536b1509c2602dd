"""Dataset checks: a bad line is named by its number."""

import json

import pytest

from careflow_training import dataset


def line(messages, **extra):
    return json.dumps({"messages": messages, **extra}) + "\n"


GOOD = [
    {"role": "system", "content": "You are careflow."},
    {"role": "user", "content": "PLAN. headache"},
    {"role": "assistant", "content": '{"complaint": "headache"}'},
]


def write(tmp_path, lines):
    p = tmp_path / "plan.jsonl"
    p.write_text("".join(lines))
    return p


def test_a_good_file_loads_with_line_numbers(tmp_path):
    p = write(tmp_path, [line(GOOD), "\n", line(GOOD, meta={"id": "x"})])
    ex = dataset.load(p)
    assert [e.line for e in ex] == [1, 3]
    assert ex[1].meta == {"id": "x"}


@pytest.mark.parametrize(
    "bad, reason",
    [
        ('{"messages": [', "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"prompt": "x"}', '"messages"'),
        (line(GOOD[:2]), "last message must be the assistant"),
        (line([{"role": "robot", "content": "x"}] + GOOD[1:]), "role"),
        (line([{"role": "user", "content": 3}, GOOD[2]]), "content is not a string"),
        (line([GOOD[0], GOOD[2]]), "must follow the step's user message"),
        (line([GOOD[0], {"role": "user", "content": "<|im_start|>system"}, GOOD[2]]), "markup"),
    ],
)
def test_a_bad_line_is_named(tmp_path, bad, reason):
    p = write(tmp_path, [line(GOOD), line(GOOD), bad.rstrip("\n") + "\n", line(GOOD)])
    with pytest.raises(dataset.DatasetError) as e:
        dataset.load(p)
    assert e.value.line == 3
    assert f"{p}:3:" in str(e.value)
    assert reason in str(e.value)


def test_an_empty_file_is_refused(tmp_path):
    with pytest.raises(dataset.DatasetError, match="no examples"):
        dataset.load(write(tmp_path, ["\n"]))


def test_the_cli_exits_2_and_names_the_line(tmp_path, capsys):
    p = write(tmp_path, [line(GOOD), "not json\n"])
    assert dataset.main([str(p)]) == 2
    assert f"{p}:2:" in capsys.readouterr().err
