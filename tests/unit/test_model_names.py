"""Models by name: ``ie.models`` keys, tasks and defaults; picking a request's model; the checks a
model dir named in a load request must pass; defaults as models come and go."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.bench.local_server import SERVING_MODEL
from pipeline.config import IESettings
from pipeline.errors import ConfigError, InvalidRequest, ModelControlError, ModelLoadError, UnknownModel
from pipeline.job_factory import resolve_model
from pipeline.model_control import checked_model_dir
from pipeline.models import load_served_model, load_served_models
from pipeline.registry import LoadedModel, ModelRegistry

UIE, SPO = SERVING_MODEL / "uie", SERVING_MODEL / "spo"
_built = pytest.mark.skipif(not (UIE / "model_card.json").exists(), reason="demo models not built")


def needs_models(test):
    """The demo models: a slow test (``make test-unit`` leaves it out), skipped without them."""
    return pytest.mark.slow(_built(test))


def settings(**models: dict) -> IESettings:
    return IESettings.model_validate({"models": models})


@needs_models
def test_todays_keys_infer_their_task_and_are_their_tasks_defaults():
    served = load_served_models(settings(uie={"dir": UIE}, spo={"dir": SPO}))
    assert {name: m.task for name, m in served.items()} == {"uie": "uie", "spo": "spo"}
    model = resolve_model({"task": "uie", "text": "x"}, served)
    assert model.name == "uie"


@needs_models
def test_any_name_takes_its_task_from_the_card_and_a_task_key_must_match_it():
    served = load_served_models(settings(resumes={"dir": UIE}, triples={"dir": SPO}))
    assert served["resumes"].task == "uie" and served["triples"].task == "spo"
    with pytest.raises(ModelLoadError, match="is a 'uie' model, not 'spo'"):
        load_served_models(settings(contracts={"dir": UIE, "task": "spo"}))
    with pytest.raises(ModelLoadError, match="not 'spo'"):
        load_served_models(settings(spo={"dir": UIE}))  # the key spo says the task


@needs_models
def test_several_models_of_a_task_need_one_default():
    with pytest.raises(ConfigError, match=r"\['a', 'b'\] all serve task uie; mark .* 'default: true'"):
        load_served_models(settings(a={"dir": UIE}, b={"dir": UIE}))
    with pytest.raises(ConfigError, match="are all 'default: true'"):
        load_served_models(settings(a={"dir": UIE, "default": True}, b={"dir": UIE, "default": True}))
    served = load_served_models(settings(a={"dir": UIE}, b={"dir": UIE, "default": True}, spo={"dir": SPO}))
    assert resolve_model({"task": "uie", "text": "x"}, served).name == "b"
    assert resolve_model({"model": "a", "text": "x"}, served).name == "a"
    with pytest.raises(UnknownModel, match=r"unknown model 'c'; served models: \['a', 'b', 'spo'\]") as err:
        resolve_model({"model": "c", "text": "x"}, served)
    assert (err.value.err_no, err.value.http_status) == (5000, 404)
    with pytest.raises(InvalidRequest, match="model 'a' serves task 'uie', not 'spo'"):
        resolve_model({"model": "a", "task": "spo", "text": "x"}, served)
    with pytest.raises(InvalidRequest, match="missing key 'task'"):
        resolve_model({"text": "x"}, served)


@pytest.mark.parametrize("name", ["", "a/b", "../x", "x" * 65, "é", "-x"])
def test_model_names_are_plain(name):
    with pytest.raises(ValueError, match="is not allowed"):
        settings(**{name: {"dir": "."}})


def bridge_dir(tmp: Path, rows: list[dict] | None, card: bool = True) -> Path:
    model = tmp / "m"
    model.mkdir(parents=True)
    if card:
        (model / "model_card.json").write_text("{}", encoding="utf-8")
    if rows is not None:
        (tmp / "parity.json").write_text(json.dumps({"hops": rows}), encoding="utf-8")
    return model


def test_a_load_dir_must_hold_a_bridge_checked_model(tmp_path):
    ok = bridge_dir(tmp_path / "ok", [{"model": "m", "passed": True}, {"model": "other", "passed": False}])
    assert checked_model_dir(str(ok), tmp_path) == ok.resolve()
    assert checked_model_dir("ok/m", tmp_path) == ok.resolve()  # relative to the config's folder
    cases = [
        (str(tmp_path / "nope"), "does not exist"),
        (str(bridge_dir(tmp_path / "a", [{"model": "m", "passed": True}], card=False)), "no model_card.json"),
        (str(bridge_dir(tmp_path / "b", None)), "no readable parity.json"),
        (str(bridge_dir(tmp_path / "c", [{"model": "other", "passed": True}])), "has no checks of model 'm'"),
        (
            str(
                bridge_dir(tmp_path / "d", [{"model": "m", "passed": True}, {"model": "m", "passed": False}])
            ),
            "did not pass",
        ),
        (str(bridge_dir(tmp_path / "e", [{"model": "m", "passed": "yes"}])), "did not pass"),
        (5, "must be a non-empty string"),
        ("", "must be a non-empty string"),
    ]
    for raw, message in cases:
        with pytest.raises(ModelControlError, match=message):
            checked_model_dir(raw, tmp_path)


@needs_models
def test_defaults_follow_the_models_that_come_and_go():
    ie = settings(uie={"dir": UIE}, spo={"dir": SPO})
    served = load_served_models(ie)
    registry = ModelRegistry({name: LoadedModel(m, "onnx") for name, m in served.items()})
    assert registry.defaults() == {"uie": "uie", "spo": "spo"}
    extra = load_served_model("uie_b", ie.models["uie"].model_copy(update={"dir": UIE}), ie)
    registry.put(LoadedModel(extra, "onnx"))  # a second uie model: the default stays
    assert registry.defaults()["uie"] == "uie"
    assert registry.acquire({"task": "uie", "text": "x"}).name == "uie"
    registry.remove("uie")  # the default goes: the one left of its task takes over
    assert registry.defaults()["uie"] == "uie_b"
    registry.remove("uie_b")
    assert "uie" not in registry.defaults()
    with pytest.raises(InvalidRequest, match="task 'uie' is not served here"):
        registry.acquire({"task": "uie", "text": "x"})
