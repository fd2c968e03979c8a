"""Issue 9, item 13: the top level of a registry document and the JSON
loader that reads it refuse bad input with a clean InvalidArgs naming the
field and the rule, never a traceback."""

import json

import pytest

from fcnetd.errors import InvalidArgs
from fcnetd.model import Attachment, Network, check_registry_document, load_json, load_json_object
from fcnetd.registry import RegistryError, parse


def test_a_good_document_gives_its_parts():
    net = Network.new("", "fcbr0", 0, "node1", "auto")
    att = Attachment("vm-1", "eth0", net.id)
    doc = check_registry_document({"schema": 1, "networks": [net.to_dict()], "attachments": [att.to_dict()]}, 1)
    assert doc.schema == 1 and doc.networks == [net.to_dict()] and doc.attachments == [att.to_dict()]
    assert check_registry_document({"schema": 1}, 1) == (1, [], [])


@pytest.mark.parametrize("schema", [True, False, 0, -5, "1", 1.0, None, [1]])
def test_schema_must_be_an_integer_from_one(schema):
    with pytest.raises(InvalidArgs, match=r"^schema: .*integer >= 1"):
        check_registry_document({"schema": schema, "networks": []}, 1)


def test_missing_and_newer_schema():
    with pytest.raises(InvalidArgs, match="^schema: .*no schema version"):
        check_registry_document({"networks": []}, 1)
    with pytest.raises(InvalidArgs, match="^schema: .*no schema version.*got a list"):
        check_registry_document([], 1)
    with pytest.raises(InvalidArgs, match=r"^schema: 2 is newer than this fcnetd understands \(1\)"):
        check_registry_document({"schema": 2}, 1)
    assert check_registry_document({"schema": 2}, 2).schema == 2


@pytest.mark.parametrize("data,field,rule", [
    ({"schema": 1, "networks": {}}, "networks", "must be a list of JSON objects, got a dict"),
    ({"schema": 1, "attachments": "x"}, "attachments", "must be a list of JSON objects, got 'x'"),
    ({"schema": 1, "networks": None}, "networks", ".*got None"),
    ({"schema": 1, "networks": [{}, []]}, r"networks\[1\]", "must be a JSON object, got a list"),
    ({"schema": 1, "attachments": [5]}, r"attachments\[0\]", "must be a JSON object, got 5"),
    ({"schema": 1, "journal": 7}, "'journal'", "unknown top-level key"),
])
def test_the_lists_must_hold_objects(data, field, rule):
    with pytest.raises(InvalidArgs, match=f"^{field}: {rule}"):
        check_registry_document(data, 1)


def test_extra_top_level_keys_can_be_allowed():
    assert check_registry_document({"schema": 2, "journal": 7}, 2, extra_keys={"journal"}).schema == 2


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a":' * 100_000, "[" * 100_000 + "]" * 100_000])
def test_deep_nesting_is_a_clean_error(text):
    with pytest.raises(InvalidArgs, match="^registry.json: is nested too deeply"):
        load_json(text, "registry.json")


@pytest.mark.parametrize("text,rule", [
    ("", "is not valid JSON"), ("{", "is not valid JSON"),
    (b"\xff\xfe{}", "is not UTF-8"), ("{}".encode("utf-16"), "is not UTF-8"),
    ('{"a": NaN}', "NaN is not a JSON value"), ('{"a": Infinity}', "Infinity is not a JSON value"),
    ('{"a": ' + "9" * 5000 + "}", "Exceeds the limit"),
])
def test_malformed_text_is_a_clean_error(text, rule):
    with pytest.raises(InvalidArgs, match="^registry.json: ") as e:
        load_json(text, "registry.json")
    assert rule in str(e.value) and len(str(e.value)) < 200 and "sys.set_int" not in str(e.value)


@pytest.mark.parametrize("text,shown", [("[]", "a list"), ("5", "5"), ('"x"', "'x'"), ("null", "None")])
def test_load_json_object_wants_an_object(text, shown):
    with pytest.raises(InvalidArgs, match=f"^journal line 3: must be a JSON object, got {shown}$"):
        load_json_object(text, "journal line 3")
    assert load_json_object(b'{"a": 1}', "x") == {"a": 1}


# Through today's loader (registry.parse calls Network/Attachment.from_dict):
# a hand edit with one wrongly typed field is refused as a whole, naming it.
@pytest.mark.parametrize("key,value", [("created", 0), ("host", 5), ("description", 5), ("name", "fcbr0\n")])
def test_the_registry_loader_refuses_a_wrongly_typed_field(key, value):
    net = {**Network.new("", "fcbr0", 0, "node1", "auto").to_dict(), key: value}
    with pytest.raises(RegistryError, match=f"{key}: "):
        parse(json.dumps({"schema": 1, "networks": [net], "attachments": []}), "registry.json")


def test_what_a_valid_bridge_auto_creates_the_loader_accepts():
    net = Network.new("", "br.lan_1-x", 4094, "node1", "auto")
    snap = parse(json.dumps({"schema": 1, "networks": [net.to_dict()], "attachments": []}), "registry.json")
    assert [n.name for n in snap.networks.values()] == ["br.lan_1-x-vlan-4094"]
