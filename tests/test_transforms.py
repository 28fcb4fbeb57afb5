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
    with pytest.raises(MalformedRowError, match=r"'c' of the row .* is a list"):
        CombineFields(["a", "c"], "q").map(ROW)


def test_add_and_map_field() -> None:
    out = AddField("tags", []).map(ROW)
    out["tags"].append(1)
    assert AddField("tags", []).map(ROW)["tags"] == []  # each row gets its own copy
    assert AddField("n", fn=lambda row: len(row)).map(ROW)["n"] == 3
    with pytest.raises(MalformedRowError, match=r"AddField\('a'\) would overwrite 'a'"):
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
    # RenameFields reads 'text' too: a row that has it is refused
    assert steps.fields_needed(frozenset({"text", "id"})) == {"body", "text", "id", "junk"}
    assert steps.reads == {"body", "text", "junk"}
    assert SelectFields(["a", "b"]).fields_needed(frozenset({"a"})) == {"a", "b"}
    extract = ExtractField("meta.x[0]", "x")
    assert extract.fields_needed(frozenset({"x", "id"})) == {"meta", "x", "id"}
    assert ExtractField("meta.x", "x", overwrite=True).fields_needed(frozenset({"x"})) == {"meta"}
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


# -- overwriting, EasyDeL's forms ---------------------------------------------------------------


def test_add_field_computes_a_callable_value_per_row() -> None:
    length = AddField("length", lambda x: len(x["text"]))
    assert length.map({"text": "hello"}) == {"text": "hello", "length": 5}
    assert AddField("n", len).map({"a": 1, "b": 2}) == {"a": 1, "b": 2, "n": 2}
    assert length.reads is None and length.fn is not None  # a function of the whole row
    # identified by the function's behaviour, like fn=
    twice = AddField("length", lambda x: 2 * len(x["text"]))
    assert length.fingerprint() != twice.fingerprint()
    assert length.fingerprint() == AddField("length", fn=lambda x: len(x["text"])).fingerprint()
    with pytest.raises(ValueError, match="exactly one"):
        AddField("n", len, fn=len)
    assert AddField(field="lang", value="en").map({}) == {"lang": "en"}  # EasyDeL's name


def test_writing_a_field_the_row_has_is_an_error_unless_overwrite() -> None:
    row = {"meta": {"a": "x"}, "t": "q", "u": "w", "messages": "old", "conversations": [], "o": 1}
    turns = {"conversations": [{"from": "human", "value": "hi"}], "messages": "old"}
    alpaca = {"instruction": "i", "output": "o", "messages": "old"}
    cases = [
        (ExtractField, ("meta.a", "t"), row, "t", "x"),
        (CombineFields, (["t", "u"], "o"), row, "o", "q w"),
        (MapField, ("t", str.upper, "u"), row, "u", "Q"),
        (AddField, ("t", "new"), row, "t", "new"),
        (ConvertToChatML, (), turns, "messages", [{"role": "user", "content": "hi"}]),
        (ConvertInputOutputToChatML, (), alpaca, "messages", None),
    ]
    for kind, args, data, target, value in cases:
        with pytest.raises(MalformedRowError, match=f"would overwrite '{target}'.*overwrite=True"):
            kind(*args).map(data)
        out = kind(*args, overwrite=True).map(data)
        assert value is None or out[target] == value, kind
        assert target in kind(*args).reads and target not in (kind(*args, overwrite=True).reads)
    # writing back into a field read is not an overwrite
    assert MapField("t", str.upper).map(row)["t"] == "Q"
    assert CombineFields(["t", "u"], "t").map(row)["t"] == "q w"
    assert ExtractField("meta.a", "meta").map(row)["meta"] == "x"
    same = ConvertToChatML("conversations", "conversations").map(turns)
    assert same["conversations"] == [{"role": "user", "content": "hi"}]
    with pytest.raises(MalformedRowError, match="would rename 'a' to 'b'"):
        RenameFields({"a": "b"}, strict=False).map(ROW)
    assert RenameFields({"a": "z", "b": "a"}).reads == {"a", "b", "z"}


def test_easydel_argument_names() -> None:
    row = {"metadata": {"author": "Ann"}, "first": "A", "last": "B", "n": 2}
    extract = ExtractField(source_path="metadata.author", target_field="author")
    assert extract.map(row)["author"] == "Ann"
    assert extract.fingerprint() == ExtractField("metadata.author", "author").fingerprint()
    with pytest.raises(MissingColumnError, match="default="):  # strict unless default= is given
        extract.map({"metadata": {}})
    missing = ExtractField(source_path="metadata.x", target_field="x", default=None)
    assert missing.map({"metadata": {}})["x"] is None
    with pytest.raises(TypeError, match="not both"):
        ExtractField("a", "b", source_path="a")
    with pytest.raises(TypeError, match="required"):
        ExtractField(target_field="b")
    full = CombineFields(source_fields=["first", "last"], target_field="name", drop_sources=True)
    assert full.map(row) == {"metadata": {"author": "Ann"}, "n": 2, "name": "A B"}
    assert full.writes == {"first", "last", "name"}
    total = CombineFields(["n", "n2"], "sum", combiner=lambda v: sum(x for x in v if x is not None))
    assert total.map({"n": 2, "n2": None})["sum"] == 2
    assert CombineFields(["first", "n"], "c", separator="-").map(row)["c"] == "A-2"  # str(number)
    assert CombineFields(["n"], "c", template="n={n}").map(row)["c"] == "n=2"
    with pytest.raises(ValueError, match="not both"):
        CombineFields(["n"], "c", template="{n}", combiner=sum)
    assert RenameFields({"first": "given"})(row)["given"] == "A"  # transform(row) is map
    assert FilterByField("n", _positive)(row) is True


def test_convert_input_output_turns_to_chatml() -> None:
    row = {
        "id": 3,
        "conversation": [
            {"input": "What is 2+2?", "output": "4."},
            {"input": "Thanks!", "output": None},
        ],
    }
    want = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "Thanks!"},
    ]
    assert ConvertInputOutputToChatML().map(row) == {"id": 3, "messages": want}
    easydel = ConvertInputOutputToChatML(input_field="conversation", output_field="chat")
    assert easydel.map(row) == {"id": 3, "chat": want}
    roles = ConvertInputOutputToChatML(user_role="human", assistant_role="gpt", system_prompt="S")
    assert [m["role"] for m in roles.map(row)["messages"]] == ["system", "human", "gpt", "human"]
    arrays = {"conversation": np.array([{"input": "a", "output": "b"}], dtype=object)}
    assert len(ConvertInputOutputToChatML().map(arrays)["messages"]) == 2
    assert "conversation" in ConvertInputOutputToChatML(keep_input=True).map(row)
    with pytest.raises(MalformedRowError, match=r"Turn 0 .* no 'input' or 'output'"):
        ConvertInputOutputToChatML().map({"conversation": [{"q": "a"}]})
    with pytest.raises(MalformedRowError, match=r"Turn 0 .* 'output' that is a int"):
        ConvertInputOutputToChatML().map({"conversation": [{"input": "a", "output": 3}]})
    with pytest.raises(MalformedRowError, match="both an Alpaca 'instruction' and input/output"):
        ConvertInputOutputToChatML().map({**row, "instruction": "x", "output": "y"})
    with pytest.raises(TypeError, match="not both"):
        ConvertInputOutputToChatML(messages_field="m", output_field="m")


def test_convert_to_chatml_roles_extend_the_defaults() -> None:
    turns = [{"from": "human", "value": "hi"}, {"from": "bot", "value": "yo"}]
    out = ConvertToChatML(roles={"bot": "assistant"}).map({"conversations": turns})
    assert [m["role"] for m in out["messages"]] == ["user", "assistant"]
    assert ConvertToChatML(role_mapping={"human": "system"}).map({"conversations": turns[:1]})[
        "messages"
    ] == [{"role": "system", "content": "hi"}]  # an entry of yours wins
    only = ConvertToChatML(roles={"bot": "assistant"}, use_default_mapping=False)
    with pytest.raises(MalformedRowError, match=r"from 'human', a speaker not in \['bot'\]"):
        only.map({"conversations": turns})
    with pytest.raises(ValueError, match="use_default_mapping=False needs roles"):
        ConvertToChatML(use_default_mapping=False)


def test_a_chain_is_called_on_a_row_like_its_steps() -> None:
    maps = RenameFields({"a": "b"}) >> RenameFields({"b": "c"})
    assert maps({"a": 1}) == {"c": 1}
    with_filter = RenameFields({"a": "b"}) >> FilterNonEmpty("b")
    assert with_filter({"a": "x"}) == {"b": "x"}
    assert with_filter({"a": ""}) is None  # dropped by the filter
