"""The field transforms, filters and chains: behaviour, declared fields, errors, fingerprints."""

from __future__ import annotations

import pickle

import grain
import numpy as np
import pytest

from easydata_grain.io.errors import MalformedRowError, MissingColumnError
from easydata_grain.op_protocols import FieldTransform, Fingerprinted
from easydata_grain.transforms.chain import Chain, MapChain, chain, flatten_transforms
from easydata_grain.transforms.chatml import ConvertInputOutputToChatML, ConvertToChatML
from easydata_grain.transforms.fields import (
    AddField,
    CombineFields,
    DropFields,
    ExtractField,
    MapField,
    RenameFields,
    SelectFields,
    parse_path,
)
from easydata_grain.transforms.filters import FilterByField, FilterNonEmpty
from easydata_grain.transforms.functions import FilterFunction, MapFunction

ROW = {"a": 1, "b": "x", "c": [1, 2]}


def _upper(value: str) -> str:
    return value.upper()


def _positive(value: int) -> bool:
    return value > 0


# -- field operations ---------------------------------------------------------------------------


def test_rename_keeps_order_and_other_fields() -> None:
    out = RenameFields({"a": "z"}).map(ROW)
    assert list(out) == ["z", "b", "c"] and out["z"] == 1 and ROW == {"a": 1, "b": "x", "c": [1, 2]}
    assert RenameFields({"a": "b", "b": "a"}).map(ROW) == {"b": 1, "a": "x", "c": [1, 2]}


def test_rename_errors() -> None:
    with pytest.raises(MissingColumnError, match=r"'q'.*fields \['a', 'b', 'c'\]"):
        RenameFields({"q": "r"}).map(ROW)
    assert RenameFields({"q": "r"}, strict=False).map(ROW) == ROW
    with pytest.raises(MalformedRowError, match="already has 'b'"):
        RenameFields({"a": "b"}).map(ROW)
    with pytest.raises(ValueError, match="same name"):
        RenameFields({"a": "z", "b": "z"})
    with pytest.raises(ValueError):
        RenameFields({})


def test_select_and_drop() -> None:
    assert list(SelectFields(["c", "a"]).map(ROW)) == ["c", "a"]
    with pytest.raises(MissingColumnError, match="'q'"):
        SelectFields(["a", "q"]).map(ROW)
    assert SelectFields(["a", "q"], strict=False).map(ROW) == {"a": 1}
    assert DropFields("c").map(ROW) == {"a": 1, "b": "x"}
    with pytest.raises(MissingColumnError):
        DropFields(["q"]).map(ROW)
    assert DropFields(["q"], strict=False).map(ROW) == ROW
    with pytest.raises(ValueError, match="twice"):
        SelectFields(["a", "a"])


def test_extract_field_paths() -> None:
    row = {"meta": {"scores": [0.5, 0.9], "tags": {"lang": "en"}}, "turns": [{"v": "hi"}]}
    assert parse_path("meta.scores[1]") == ("meta", "scores", 1)
    assert ExtractField("meta.scores[1]", "s").map(row)["s"] == 0.9
    assert ExtractField("meta.scores[-1]", "s").map(row)["s"] == 0.9
    assert ExtractField("meta.tags.lang", "lang").map(row)["lang"] == "en"
    assert ExtractField("turns[0].v", "first").map(row)["first"] == "hi"
    arrays = {"ids": np.array([4, 5, 6])}
    assert ExtractField("ids[2]", "last").map(arrays)["last"] == 6
    with pytest.raises(
        MissingColumnError, match=r"found no 5 in meta\.scores \(a list of length 2\)"
    ):
        ExtractField("meta.scores[5]", "s").map(row)
    with pytest.raises(MissingColumnError, match=r"found no 'x' in meta \(a dict with keys"):
        ExtractField("meta.x", "s").map(row)
    assert ExtractField("meta.x", "s", default=None).map(row)["s"] is None
    for bad in ("", ".a", "a..b", "a[x]", "[0]", "a."):
        with pytest.raises(ValueError):
            parse_path(bad)


def test_combine_fields() -> None:
    row = {"instruction": "Do it", "input": "", "output": "Done"}
    assert CombineFields(["instruction", "input"], "q", separator="\n").map(row)["q"] == "Do it"
    assert (
        CombineFields(["instruction", "input"], "q", skip_empty=False, separator="|").map(row)["q"]
        == "Do it|"
    )
    out = CombineFields(["instruction", "output"], "q", template="{instruction} -> {output}").map(
        row
    )
    assert out["q"] == "Do it -> Done"
    with pytest.raises(ValueError, match="placeholder"):
        CombineFields(["instruction"], "q", template="{nope}")
    with pytest.raises(MalformedRowError, match=r"'a' of the row .* is a int"):
        CombineFields(["a", "b"], "q").map(ROW)


def test_add_and_map_field() -> None:
    out = AddField("tags", []).map(ROW)
    out["tags"].append(1)
    assert AddField("tags", []).map(ROW)["tags"] == []  # each row gets its own copy
    assert AddField("n", fn=lambda row: len(row)).map(ROW)["n"] == 3
    with pytest.raises(MalformedRowError, match="already has it"):
        AddField("a", 2).map(ROW)
    assert AddField("a", 2, overwrite=True).map(ROW)["a"] == 2
    with pytest.raises(ValueError, match="exactly one"):
        AddField("a")
    assert MapField("b", _upper).map(ROW)["b"] == "X"
    assert MapField("b", _upper, "B").map(ROW) == {**ROW, "B": "X"}
    with pytest.raises(TypeError):
        MapField("b", "not callable")  # type: ignore[arg-type]
    with pytest.raises(MissingColumnError):
        MapField("q", _upper).map(ROW)


def test_not_a_dict_row() -> None:
    with pytest.raises(MalformedRowError, match="not a dict row"):
        RenameFields({"a": "b"}).map([1, 2])  # type: ignore[arg-type]


# -- filters ------------------------------------------------------------------------------------


def test_filters() -> None:
    assert FilterByField("a", _positive).filter(ROW)
    assert not FilterByField("a", lambda v: v > 5).filter(ROW)
    with pytest.raises(MissingColumnError):
        FilterByField("q", _positive).filter(ROW)
    assert FilterByField("q", _positive, keep_missing=False).filter(ROW) is False
    empty = FilterNonEmpty(["text", "ids"])
    assert empty.filter({"text": "a", "ids": [1]})
    assert not empty.filter({"text": "  ", "ids": [1]})
    assert not empty.filter({"text": "a", "ids": np.array([], np.int32)})
    assert not empty.filter({"text": None, "ids": [1]})
    assert FilterNonEmpty("text", strip=False).filter({"text": " "})
    with pytest.raises(MalformedRowError, match="cannot tell whether a int is empty"):
        FilterNonEmpty("a").filter(ROW)


# -- ShareGPT / Alpaca conversions --------------------------------------------------------------


def test_convert_to_chatml() -> None:
    row = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    out = ConvertToChatML().map(row)
    assert out == {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    }
    assert "conversations" in ConvertToChatML(keep_input=True).map(row)
    with pytest.raises(MalformedRowError, match="from 'alien'"):
        ConvertToChatML().map({"conversations": [{"from": "alien", "value": "x"}]})
    assert ConvertToChatML(roles={"alien": "user"}).map(
        {"conversations": [{"from": "alien", "value": "x"}]}
    )["messages"] == [{"role": "user", "content": "x"}]
    with pytest.raises(MalformedRowError, match="has no messages"):
        ConvertToChatML().map({"conversations": []})
    with pytest.raises(MalformedRowError, match="neither OpenAI"):
        ConvertToChatML().map({"conversations": [{"speaker": "a"}]})
    # Parquet lists of structs may come as object arrays
    arr = np.array([{"from": "human", "value": "hi"}], dtype=object)
    assert ConvertToChatML().map({"conversations": arr})["messages"][0]["role"] == "user"


def test_convert_input_output_to_chatml() -> None:
    row = {"instruction": "Add", "input": "1 2", "output": "3", "id": 7}
    out = ConvertInputOutputToChatML().map(row)
    assert out == {
        "id": 7,
        "messages": [
            {"role": "user", "content": "Add\n\n1 2"},
            {"role": "assistant", "content": "3"},
        ],
    }
    no_input = ConvertInputOutputToChatML(system_prompt="Be brief").map({**row, "input": ""})
    assert [m["role"] for m in no_input["messages"]] == ["system", "user", "assistant"]
    assert no_input["messages"][1]["content"] == "Add"
    with pytest.raises(MissingColumnError, match="'output'"):
        ConvertInputOutputToChatML().map({"instruction": "x"})
    with pytest.raises(MalformedRowError, match=r"'output' of the row .* should be a string"):
        ConvertInputOutputToChatML().map({"instruction": "x", "output": 3})


# -- declarations, chains, fingerprints ---------------------------------------------------------


def test_every_transform_declares_fields_and_is_a_grain_op() -> None:
    ops = [
        RenameFields({"a": "b"}),
        SelectFields("a"),
        DropFields("a"),
        ExtractField("a.b", "c"),
        CombineFields(["a"], "c"),
        AddField("a", 1),
        MapField("a", _upper),
        FilterByField("a", _positive),
        FilterNonEmpty("a"),
        ConvertToChatML(),
        ConvertInputOutputToChatML(),
        MapFunction(dict),
        FilterFunction(bool),
    ]
    for op in ops:
        assert isinstance(op, FieldTransform) and isinstance(op, Fingerprinted), op
        assert isinstance(op, grain.transforms.Map | grain.transforms.Filter), op
        assert pickle.loads(pickle.dumps(op)).fingerprint() == op.fingerprint(), op


def test_fields_needed_walks_back() -> None:
    steps = RenameFields({"body": "text"}) >> FilterNonEmpty("text") >> DropFields("junk")
    assert steps.fields_needed(frozenset({"text", "id"})) == {"body", "id", "junk"}
    assert steps.reads == {"body", "junk"}
    assert SelectFields(["a", "b"]).fields_needed(frozenset({"a"})) == {"a", "b"}
    assert ExtractField("meta.x[0]", "x").fields_needed(frozenset({"x", "id"})) == {"meta", "id"}
    assert (MapFunction(dict) >> SelectFields("a")).fields_needed(frozenset({"a"})) is None
    assert DropFields("q", strict=False).fields_needed(frozenset({"a"})) == {"a"}


def test_chains() -> None:
    maps = RenameFields({"a": "z"}) >> MapField("b", _upper)
    assert isinstance(maps, MapChain) and isinstance(maps, grain.transforms.Map)
    assert maps.map(ROW) == {"z": 1, "b": "X", "c": [1, 2]}
    assert maps.map_batch([ROW, ROW]) == [maps.map(ROW)] * 2
    mixed = maps >> FilterByField("z", lambda v: v > 1) >> DropFields("c")
    assert type(mixed) is Chain and not isinstance(
        mixed, grain.transforms.Map | grain.transforms.Filter
    )
    assert len(mixed.steps) == 4  # flattened
    assert mixed.apply(ROW) is None and mixed.apply({**ROW, "a": 2}) == {"z": 2, "b": "X"}
    assert mixed.apply_batch([ROW, {**ROW, "a": 2}]) == [None, {"z": 2, "b": "X"}]
    assert flatten_transforms([mixed, _upper]) == [*mixed.steps, _upper]
    assert isinstance(chain(_upper), MapChain)  # a function is a map
    with pytest.raises(TypeError, match="RandomMap"):

        class Noise(grain.transforms.RandomMap):
            def random_map(self, element, rng):  # type: ignore[no-untyped-def]
                return element

        chain(Noise())
    with pytest.raises(TypeError, match="Cannot chain"):
        chain(3)


def test_fingerprints_follow_the_configuration() -> None:
    assert RenameFields({"a": "b"}).fingerprint() == RenameFields({"a": "b"}).fingerprint()
    assert RenameFields({"a": "b"}).fingerprint() != RenameFields({"a": "c"}).fingerprint()
    assert MapField("b", _upper).fingerprint() != MapField("b", str.lower).fingerprint()
    one = RenameFields({"a": "b"}) >> DropFields("c")
    two = RenameFields({"a": "b"}) >> DropFields("d")
    assert one.fingerprint() != two.fingerprint() and one.identity == one.fingerprint()
    # the loader's describer reads plain attributes: ``identity`` carries the fingerprint
    from easydata_grain.fingerprint import describe

    assert describe(one) != describe(two)
    assert "RenameFields" in repr(one) and ">>" in repr(one)
