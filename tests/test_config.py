"""YAML config loading and dotted overrides."""

import pytest

from neurohorizon.config import (
    ConfigError,
    apply_override,
    from_dict,
    load_config,
    save_config,
    to_dict,
)


def test_defaults_then_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain:\n  lr: 0.01\n  max_steps: 10\ndata:\n  options: {n_neurons: 60}\n")
    cfg = load_config(path, ["train.max_steps=20", "train.lr=3e-4", "data.options.seed=4"])
    assert cfg.name == "x"
    assert cfg.train.max_steps == 20
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.data.options == {"n_neurons": 60, "seed": 4}
    assert cfg.train.batch_size == 16  # untouched default


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(None, ["model.preset=tiny", "sampling.kind=linear", "data.align_event=go_cue"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert to_dict(again) == to_dict(cfg)
    assert to_dict(from_dict(to_dict(cfg))) == to_dict(cfg)


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.lrr=1", ["unknown key", "train.lrr"]),
        ("train.max_steps=abc", ["train.max_steps", "wrong type"]),
        ("train.amp=3", ["train.amp", "wrong type"]),
        ("train.max_steps=1.5", ["wrong type"]),
        ("nonsense", ["key.sub=value"]),
        ("bogus.x=1", ["unknown key"]),
        ("data.options={n_neurons:20}", ["reads {a:1} as the key 'a:1'", "data.options.a=1"]),
    ],
)
def test_bad_overrides_name_the_key(override, words):
    cfg = load_config()
    with pytest.raises(ConfigError) as err:
        apply_override(cfg, override)
    for word in words:
        assert word in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml") as err:
        load_config(bad)
    assert "\n" not in str(err.value) and "at line 2, column 1" in str(err.value)
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(notmap)


def test_packaged_demo_config_loads():
    from importlib import resources
    from pathlib import Path

    cfg = load_config(Path(str(resources.files("neurohorizon") / "configs" / "demo.yaml")))
    assert cfg.data.source == "synthetic:reach"
    assert cfg.sampling.feedback == "sample" and cfg.model.preset == "small"
    assert cfg.data.align_event == "go_cue"
    assert cfg.data.events == ["target_on", "go_cue"] and cfg.sampling.kind == "linear"


@pytest.mark.parametrize("text", ["data: 5\n", "data: null\n", "train: [1, 2]\n"])
def test_a_section_given_a_value_is_a_clear_error(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"c.yaml: '(data|train)' is a section; give its keys"):
        load_config(path)
    with pytest.raises(ConfigError, match="command line: 'data' is a section"):
        load_config(None, ["data=5"])


def test_a_directory_or_binary_file_as_config_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="is not a file"):
        load_config(tmp_path)
    (tmp_path / "b.yaml").write_bytes(b"\xff\xfe\x00x")
    with pytest.raises(ConfigError, match=r"b.yaml: not a text \(UTF-8\) file"):
        load_config(tmp_path / "b.yaml")


def test_train_help_lists_every_config_key_with_its_default_and_note(capsys):
    """`neurohorizon train --help` ends with every key (read from the dataclasses), each a valid
    override whose default is the value shown, and the notes written beside the fields."""
    import dataclasses

    import pytest
    import yaml

    from neurohorizon.cli import main
    from neurohorizon.config import RunConfig, apply_override, key_reference

    reference = key_reference()
    keys = [line[2:47].strip() for line in reference.splitlines() if not line.startswith(" " * 48)]
    expected = [f"{s.name}.{f.name}" for s in dataclasses.fields(RunConfig) if s.name != "name"
                for f in dataclasses.fields(getattr(RunConfig(), s.name))]
    assert [k.split("=", 1)[0] for k in keys] == expected
    for item in keys:  # each shown default is a valid override that leaves the config as it was
        cfg = RunConfig()
        apply_override(cfg, item)
        section, rest = item.split(".", 1)
        name, text = rest.split("=", 1)
        assert getattr(getattr(cfg, section), name) == getattr(getattr(RunConfig(), section), name), item
        assert yaml.safe_load(text) == getattr(getattr(RunConfig(), section), name), item
    assert "train.compile=false" in reference and "SLOWER on an H200" in reference
    assert "sampling.feedback=sample" in reference and "what is fed back, in training AND" in reference
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "loss.likelihood=poisson" in capsys.readouterr().out


def test_demo_minutes_must_be_positive_before_any_folder(tmp_path, capsys):
    from neurohorizon.cli import main

    for bad in ("0", "-1"):
        assert main(["--runs-dir", str(tmp_path), "demo", "--minutes", bad]) == 2
        assert f"demo --minutes must be > 0, got {bad}" in capsys.readouterr().err
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
