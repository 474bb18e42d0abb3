"""Property: any string on the command line either gives a valid config or a clean error (exit
2, one ``mmbyol: error:`` paragraph), never a traceback."""

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from mmbyol.cli import main
from mmbyol.config import load_config


def dotted_keys(node, prefix="") -> list[str]:
    keys = []
    for key, value in node.items():
        name = f"{prefix}{key}"
        keys.append(name)
        if isinstance(value, dict):
            keys += dotted_keys(value, name + ".")
    return keys


# `plugins` imports what it names: fuzzing it could import any module at all (it is tried below)
KEYS = sorted({key for modality in ("image", "audio", "text")
               for key in dotted_keys(OmegaConf.to_container(load_config([f"modality={modality}"])))} - {"plugins"})
TRICKY = ["", "null", "~", "[]", "{}", "[1, 2", "{a: 1", "]", "???", "${oops}", "${data.batch_size}", "${", "\\",
          "'", '"', "1e400", "nan", "-inf", "-1", "0", "true", "yes", "[{name: gain}]", "[{nme: x}]", "[1]",
          "{name: resnet18}", "a=b=c", "=", "..", "\x00", "é", "✓" * 3, "1" * 400]
VALUES = st.one_of(st.sampled_from(TRICKY), st.text(max_size=30), st.integers().map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(str))
OVERRIDES = st.one_of(
    st.builds(lambda key, value: f"{key}={value}", st.sampled_from(KEYS), VALUES),  # a real key, any value
    st.builds(lambda key, value: f"{key}={value}", st.sampled_from(KEYS).map(lambda k: k + "x"), VALUES),  # a typo
    st.text(max_size=40),  # anything at all
    st.sampled_from(["plugins=", "plugins=[]", "plugins=[\"\"]", "plugins=[.x]", "plugins=[no_such_module_x]",
                     "plugins=7", "plugins={a: 1}", "plugins=[[os]]", "plugins=[1]"]),
)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # counts: conftest profiles
@given(overrides=st.lists(OVERRIDES, max_size=4))
def test_any_override_gives_a_valid_config_or_a_clean_error(overrides, tally, capsys):
    """Through the CLI's ``main`` only: it composes with ``load_config`` and turns its errors into
    exit 2, and anything else it raised would fail the test with its traceback."""
    tally["config strings tried"] += len(overrides)
    try:
        code = main(["config", *overrides])
    except SystemExit as exit:  # argparse's own refusal, e.g. of an unknown option such as "-x"
        code = exit.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if code == 0:  # a valid config: every value resolved, printed as YAML that reads back
        printed = yaml.safe_load(out)
        assert isinstance(printed, dict) and printed["modality"] in ("image", "audio", "text", "timeseries")
        assert "${" not in out
    else:
        assert code == 2
        assert err.count("mmbyol: error:") <= 1 and err.strip()  # one paragraph (argparse's says `usage:` too)
