"""Property tests of the config parser: whatever a user writes, it parses or fails in one line.

For any TOML file and any `--set` expressions, `load_config` either returns a valid `Config` or raises a
`UserError` whose message is a single line; never another exception, never a traceback. A config that
parses holds only finite numbers and survives its own resolved-config round trip (what `config.toml`
in a run directory is). The same holds for `genaug validate` on the command line: exit status 0 or 2.

Deterministic (`derandomize=True`, no example database), so CI sees the same examples every run.
"""

from __future__ import annotations

import datetime
import json
import math
import string
import tomllib
import typing

import pytest
import tomli_w
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from genaug.config import Config, load_config, to_toml, validate
from genaug.errors import UserError

FAST = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CLI = settings(FAST, max_examples=12)


def _keys(model: type[BaseModel] = Config, prefix: str = "") -> tuple[list[str], list[str]]:
    """(leaf keys, table keys) of the config model, dotted: ["mae.steps", ...], ["mae", ...]."""
    leaves, tables = [], []
    for name, field in model.model_fields.items():
        key = prefix + name
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            tables.append(key)
            sub_leaves, sub_tables = _keys(field.annotation, key + ".")
            leaves += sub_leaves
            tables += sub_tables
        else:
            leaves.append(key)
    return leaves, tables


LEAVES, TABLES = _keys()
# Values some keys accept, so that examples also reach the cross-key checks past the type checks.
LITERALS = ["rgb", "thermal", "real", "real+gen", "real+real", "real+noise", "real-aa", "real-x2", "real+classic",
            "ddpm", "cyclegan", "pix2pix", "vit_translator", "ddpm>cyclegan", "scratch", "auto", "tiny", "small",
            "paper", "micro", "base", "crop", "squash", "pad", "scenes", "folder", "kaist", "unet", "resnet",
            "epochs", "steps", "cpu", "off", "on", "bce", "lsgan", "minmax", "full", "day", "night", "all"]
# TOML-ish fragments: broken brackets, strings, tables, dates, special floats, comments.
FRAGMENTS = ["[", "]", "[]", "[[1]]", "{", "}", "{}", "{a = 1}", "{steps = 3}", '"', '"""', "'''", "'x'",
             "true", "True", "nan", "-inf", "+inf", "1e999", "-0.0", "0x1F", "0o7", "0b1", "1_000", "1__0",
             "1979-05-27", "1979-05-27T07:32:00Z", "07:32:00", "# comment", "=", "==", "a=b", "\n", "\r\n",
             "\\", "\x00", "\t", "[1, 'x', 2.5]", "[nan, 1]", "[inf]", "[0, 0]", "[-32, 64]", "{a = {b = 1}}",
             "[" * 600 + "]" * 600, "[" * 600, "{a=" * 400 + "1" + "}" * 400, "9" * 5000, "1" * 4301,
             "1e308", "-1", "2147483648", "99999999999999999999"]


def toml_float(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return repr(x)


scalar_text = st.one_of(
    st.integers().map(str),
    st.integers(min_value=-3, max_value=600).map(str),
    st.floats().map(toml_float),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(max_size=12).map(json.dumps),  # a quoted TOML string (\u escapes are TOML's too)
    st.text(max_size=12),  # unquoted: read as a string, or as TOML when it happens to be
    st.sampled_from(LITERALS),
    st.sampled_from(LITERALS).map(json.dumps),
    st.sampled_from(FRAGMENTS),
)
value_text = st.one_of(
    scalar_text,
    st.lists(scalar_text, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
    st.lists(st.sampled_from(LITERALS).map(json.dumps), min_size=1, max_size=3).map(lambda xs: f"[{', '.join(xs)}]"),
    st.tuples(st.sampled_from(["a", "steps", "lr", "x"]), scalar_text).map(lambda kv: f"{{{kv[0]} = {kv[1]}}}"),
    st.lists(st.sampled_from(FRAGMENTS + LITERALS), min_size=1, max_size=4).map("".join),
)
identifier = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=8)
key_text = st.one_of(
    st.sampled_from(LEAVES),
    st.sampled_from(LEAVES),  # twice: most keys a user writes exist
    st.sampled_from(TABLES),
    st.tuples(st.sampled_from(TABLES), identifier).map(".".join),  # unknown key in a known table
    st.tuples(st.sampled_from(LEAVES), identifier).map(".".join),  # a key below a value
    identifier,
    st.text(max_size=10),  # anything at all, dots, spaces and newlines included
)


def _field(key: str):
    model: type[BaseModel] = Config
    *tables, name = key.split(".")
    for table in tables:
        model = model.model_fields[table].annotation
    return model.model_fields[name].annotation


def typed_value(annotation) -> st.SearchStrategy[str]:
    """TOML text of a value of (about) the field's own type: past the type check, into the range and
    cross-key checks."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return typed_value(args[0])
    if origin is typing.Literal:
        return st.sampled_from(args).map(lambda v: json.dumps(v) if isinstance(v, str) else str(v))
    if origin is list:
        return st.lists(typed_value(args[0]), max_size=5).map(lambda xs: "[" + ", ".join(xs) + "]")
    if annotation is bool:
        return st.sampled_from(["true", "false"])
    if annotation is int:
        return st.one_of(st.integers(-2, 70), st.integers(-2, 5000), st.integers()).map(str)
    if annotation is float:
        return st.one_of(st.floats(-0.5, 1.5), st.floats(0, 1e4), st.floats()).map(toml_float)
    return st.one_of(st.sampled_from(LITERALS), st.text(max_size=8)).map(json.dumps)  # str


typed_expression = st.sampled_from(LEAVES).flatmap(
    lambda key: typed_value(_field(key)).map(lambda value: f"{key}={value}"))
expression = st.one_of(
    typed_expression,
    st.tuples(key_text, value_text).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.tuples(key_text, st.sampled_from([" = ", "= ", " =", "=="]), value_text).map("".join),
    st.text(max_size=30),
)


def check(call) -> Config | None:
    """The property: a valid Config (finite numbers, round-trips through its TOML) or a one-line UserError."""
    try:
        cfg = call()
    except UserError as e:
        text = str(e)
        assert text.strip(), "a user error says something"
        assert "\n" not in text and text.splitlines() == [text], f"a user error is one line: {text!r}"
        event("user error")
        return None
    assert isinstance(cfg, Config)
    event("valid config")
    numbers = _numbers(cfg.model_dump())
    assert all(math.isfinite(x) for x in numbers), "a valid config holds only finite numbers"
    assert validate(tomllib.loads(to_toml(cfg))) == cfg, "the resolved config reloads as itself"
    return cfg


def _numbers(value) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return [value] if isinstance(value, float) else []


# ------------------------------------------------------------------------------------------ --set alone


@FAST
@given(st.lists(st.text(), max_size=3))
@example(["mae.a\nb=1"])  # was: the unknown key printed raw, its newline splitting the message
@example(["x=" + "[" * 3000])  # was: RecursionError from tomllib
@example(["mae.steps=" + "1" * 5000])  # was: ValueError (int longer than 4300 digits) from tomllib
def test_any_set_text_parses_or_fails_in_one_line(items):
    check(lambda: load_config(None, items))


@FAST
@given(st.lists(st.one_of(typed_expression, expression), min_size=1, max_size=6))
@example(["ddpm.preset=[1]"])  # was: TypeError (unhashable list) in the DDPM preset validator
@example(["ddpm.preset={a = 1}"])  # was: TypeError (unhashable dict)
@example(["study.ratios=[inf]"])  # was: OverflowError in the ratio x n_train check
@example(["study.ratios=[1e308]"])  # was: OverflowError (finite ratio, infinite product)
@example(["data.n_train=" + "9" * 400, "data.scenes.n_frames=" + "9" * 402, "study.ratios=[1]"])  # was: OverflowError
@example(["ddpm.block_out_channels=[0, 0]"])  # was: ZeroDivisionError in the group-norm check
@example(["ddpm.block_out_channels=[-32, 64]"])  # was: accepted, failing only inside diffusers
@example(["mae.lr=inf"])  # was: accepted, failing only as a non-finite loss mid-training
@example(["mae.augment.crop_scale=[nan, 1]"])
@example(["seed.x=1"])
def test_structured_set_expressions_parse_or_fail_in_one_line(items):
    check(lambda: load_config(None, items))


# ------------------------------------------------------------------------------------------ TOML files

toml_scalar = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-2, max_value=600),
    st.floats(),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(LITERALS),
    st.dates(),
    st.datetimes(timezones=st.just(datetime.timezone.utc)),
)
toml_value = st.one_of(
    toml_scalar,
    st.lists(toml_scalar, max_size=4),
    st.lists(st.sampled_from(LITERALS), max_size=3),
    st.dictionaries(identifier, toml_scalar, max_size=2),
)
doc_key = st.one_of(
    st.sampled_from(LEAVES),
    st.sampled_from(LEAVES),
    st.sampled_from(TABLES),
    st.tuples(st.sampled_from(TABLES), identifier).map(".".join),
    identifier,
    st.text(min_size=1, max_size=8),  # a quoted key: dots, quotes, newlines, anything
)


def nested(pairs: list[tuple[str, object]]) -> dict:
    """Dotted keys -> nested tables; a key below an existing value, or a value over a table, is dropped."""
    doc: dict = {}
    for key, value in pairs:
        parts = [key] if "." not in key or any(c in key for c in "\n\"'") else key.split(".")
        node = doc
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            if parts[-1] not in node or not isinstance(node[parts[-1]], dict):
                node[parts[-1]] = value
    return doc


documents = st.lists(st.tuples(doc_key, toml_value), max_size=6).map(nested).map(tomli_w.dumps)
header = st.tuples(st.sampled_from(["[{}]", "[[{}]]", "[{}", "{}]"]),
                   st.one_of(st.sampled_from(TABLES), identifier, st.text(max_size=6))).map(
    lambda fmt_name: fmt_name[0].format(fmt_name[1]))
line = st.one_of(
    header,
    st.tuples(st.one_of(st.sampled_from([k.rpartition(".")[2] for k in LEAVES]), key_text), value_text).map(
        lambda kv: f"{kv[0]} = {kv[1]}"),
    st.text(max_size=20),
)
text_documents = st.lists(line, max_size=8).map("\n".join)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("properties")


@FAST
@given(doc=documents, overrides=st.lists(expression, max_size=2))
@example(doc='[ddpm]\npreset = ["tiny"]\n', overrides=[])
@example(doc='"mae\\nx" = 1\n', overrides=[])  # a quoted key with a newline: named on one line
@example(doc='"a\\nb" = 1\n', overrides=["a\nb.c=2"])  # a --set into that value: named on one line
@example(doc="v = " + "[" * 2000 + "]" * 2000 + "\n", overrides=[])  # was: RecursionError
@example(doc="seed = " + "1" * 5000 + "\n", overrides=[])  # was: ValueError from tomllib
def test_any_toml_document_parses_or_fails_in_one_line(workdir, doc, overrides):
    path = workdir / "study.toml"
    path.write_text(doc, encoding="utf-8")
    check(lambda: load_config(path, overrides))


@FAST
@given(text_documents)
def test_any_toml_text_parses_or_fails_in_one_line(workdir, doc):
    path = workdir / "text.toml"
    path.write_text(doc, encoding="utf-8")
    check(lambda: load_config(path))


@FAST
@given(st.binary(max_size=64))
@example(b"\xff\xfe[mae]")
def test_any_bytes_in_a_config_file_parse_or_fail_in_one_line(workdir, data):
    path = workdir / "bytes.toml"
    path.write_bytes(data)
    check(lambda: load_config(path))


# --------------------------------------------------------------------------------------- genaug validate

# A scenes study small enough that `validate` (plan, selection, decoding every selected frame) is quick.
TINY = """\
seed = 0
[data]
image_size = 16
n_pool = 8
n_train = 8
n_test = 8
[data.scenes]
n_frames = 40
[cyclegan]
d_layers = 2
[study]
seeds = [0]
n_synthetic = 8
"""


@CLI
@given(st.lists(st.one_of(expression, st.sampled_from(["mae.steps=7", "runtime.threads=1", 'data.resize="pad"'])),
                max_size=2))
@example([])  # the tiny study itself is valid: exit 0
@example(["ddpm.preset=[1]"])
def test_validate_command_exits_0_or_2_without_traceback(workdir, items):
    from typer.testing import CliRunner

    from genaug.cli import app

    config = workdir / "tiny.toml"
    config.write_text(TINY)
    args = ["validate", str(config)]
    for item in items:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        assert "valid" in result.stdout
    else:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
