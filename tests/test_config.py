"""Dataclass configs from YAML: overlays, overrides, typo and type errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from voiceconv.config import apply_overrides, deep_merge, from_dict, load_config, load_yaml, save_yaml, to_dict
from voiceconv.errors import ConfigError
from voiceconv.features import MelConfig


@dataclass
class DecoderConfig:
    channels: int = 128
    n_blocks: int = 6
    kernel_size: int = 5
    upsample: tuple[int, ...] = (2, 1, 2)


@dataclass
class QuantizerConfig:
    codebook_size: int = 512
    decay: float = 0.999


@dataclass
class ModelConfig:
    mel: MelConfig = field(default_factory=MelConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    quantizer: QuantizerConfig | None = None


@dataclass
class Experiment:
    model: ModelConfig = field(default_factory=ModelConfig)
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    steps: int = 100
    name: str = "run"
    amp: bool = False
    schedule: Literal["cosine", "constant"] = "cosine"
    lambdas: dict[str, float] = field(default_factory=lambda: {"loss/rec": 10.0})
    threads: int | None = None


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_and_nested_values():
    config = from_dict(Experiment, {"model": {"decoder": {"channels": 256}, "mel": {"n_mels": 64}}, "steps": 5})
    assert config.model.decoder == DecoderConfig(channels=256)
    assert config.model.mel == MelConfig(n_mels=64)
    assert config.model.quantizer is None and config.steps == 5 and config.lr == 5e-4
    assert from_dict(Experiment, None) == Experiment()


def test_unknown_nested_key_names_dotted_key_and_known_keys():
    with pytest.raises(ConfigError) as info:
        from_dict(Experiment, {"model": {"decoder": {"chanels": 256}}})
    message = str(info.value)
    assert "unknown key 'model.decoder.chanels'" in message
    assert "did you mean 'model.decoder.channels'?" in message
    assert "known keys: model.decoder.channels, model.decoder.n_blocks, model.decoder.kernel_size, " \
           "model.decoder.upsample" in message
    assert "\n" not in message


def test_unknown_top_level_and_mel_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'stpes' \(did you mean 'steps'\?\); known keys: model, lr"):
        from_dict(Experiment, {"stpes": 3})
    with pytest.raises(ConfigError, match="unknown key 'xyz'; known keys: model, lr, betas, steps"):
        from_dict(Experiment, {"xyz": 3})  # nothing close: no suggestion
    with pytest.raises(ConfigError, match="'model.mel.hop_size'.*did you mean 'model.mel.hop_length'"):
        from_dict(Experiment, {"model": {"mel": {"hop_size": 256}}})


def test_types_are_checked_and_yaml_ambiguities_resolved():
    config = from_dict(
        Experiment,
        {"lr": "1e-4", "steps": 1e3, "betas": [0.5, 0.9], "name": 2024, "threads": 2,
         "model": {"decoder": {"upsample": [1, 2]}, "mel": {"fmax": 7600}}, "lambdas": {"loss/kl": 1}},
    )
    assert config.lr == 1e-4 and isinstance(config.lr, float)  # PyYAML reads 1e-4 as a string
    assert config.steps == 1000 and isinstance(config.steps, int)
    assert config.betas == (0.5, 0.9) and config.model.decoder.upsample == (1, 2)
    assert config.name == "2024" and config.lambdas == {"loss/rec": 10.0, "loss/kl": 1.0}
    assert isinstance(config.model.mel.fmax, float)
    bad = [
        ({"steps": "many"}, "'steps': expected an integer, got 'many'"),
        ({"steps": 1.5}, "'steps': expected an integer"),
        ({"steps": True}, "'steps': expected an integer"),
        ({"lr": "fast"}, "'lr': expected a number"),
        ({"amp": "yes please"}, "'amp': expected true or false"),
        ({"schedule": "linear"}, "'schedule': expected one of 'cosine', 'constant'"),
        ({"betas": [0.9]}, "'betas': expected a list of 2 values"),
        ({"betas": 0.9}, "'betas': expected a list"),
        ({"lambdas": {"loss/rec": "x"}}, r"'lambdas.loss/rec': expected a number"),
        ({"model": {"decoder": {"upsample": [1, "a"]}}}, r"'model.decoder.upsample\[1\]': expected an integer"),
        ({"model": {"decoder": 3}}, "section 'model.decoder' must be a mapping"),
        ({"steps": None}, "'steps': expected int"),
        ({"model": {"mel": {"win_length": 4096}}}, "must not exceed n_fft"),
    ]
    for data, message in bad:
        with pytest.raises(ConfigError, match=message):
            from_dict(Experiment, data)


def test_optional_section_is_switched_on_by_a_mapping():
    assert from_dict(Experiment, {"model": {"quantizer": {}}}).model.quantizer == QuantizerConfig()
    assert from_dict(Experiment, {"model": {"quantizer": None}}).model.quantizer is None
    assert from_dict(Experiment, {"threads": None}).threads is None
    # An already-built dataclass is accepted as is (programmatic use).
    assert from_dict(ModelConfig, {"decoder": DecoderConfig(channels=3)}).decoder.channels == 3


def test_base_overlays(tmp_path):
    _write(tmp_path / "conf/common/base.yaml", "# the base\nmodel:\n  decoder:\n    channels: 64  # c_h\n"
           "    n_blocks: 2\nlr: 0.001\nlambdas:\n  loss/rec: 10.0\n")
    _write(tmp_path / "conf/common/extra.yaml", "steps: 7\nlambdas:\n  loss/kl: 1.0\n")
    variant = _write(tmp_path / "conf/variant.yaml",
                     "base: [common/base.yaml, common/extra.yaml]\nmodel:\n  decoder:\n    n_blocks: 4\nname: v\n")
    merged = load_yaml(variant)
    assert merged == {"model": {"decoder": {"channels": 64, "n_blocks": 4}}, "lr": 0.001, "steps": 7,
                      "lambdas": {"loss/rec": 10.0, "loss/kl": 1.0}, "name": "v"}
    config = load_config(Experiment, variant)
    assert config.model.decoder == DecoderConfig(channels=64, n_blocks=4)
    assert config.lambdas == {"loss/rec": 10.0, "loss/kl": 1.0}
    # A single string works too, and chains of bases resolve relative to each file.
    chained = _write(tmp_path / "other/chain.yaml", "base: ../conf/variant.yaml\nsteps: 9\n")
    assert load_config(Experiment, chained).steps == 9
    assert load_config(Experiment, chained).name == "v"


def test_circular_and_missing_bases(tmp_path):
    _write(tmp_path / "a.yaml", "base: b.yaml\nsteps: 1\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\nsteps: 2\n")
    with pytest.raises(ConfigError, match=r"circular 'base:' chain \(a.yaml -> b.yaml -> a.yaml\)"):
        load_yaml(tmp_path / "a.yaml")
    _write(tmp_path / "self.yaml", "base: self.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_yaml(tmp_path / "self.yaml")
    _write(tmp_path / "orphan.yaml", "base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"nowhere.yaml \(the base of .*orphan.yaml\): config file not found"):
        load_yaml(tmp_path / "orphan.yaml")
    _write(tmp_path / "weird.yaml", "base: {x: 1}\n")
    with pytest.raises(ConfigError, match="'base:' must be a file name"):
        load_yaml(tmp_path / "weird.yaml")
    # A diamond (two bases sharing a base) is not a cycle.
    _write(tmp_path / "root.yaml", "steps: 1\n")
    _write(tmp_path / "left.yaml", "base: root.yaml\nlr: 0.1\n")
    _write(tmp_path / "right.yaml", "base: root.yaml\nname: r\n")
    _write(tmp_path / "diamond.yaml", "base: [left.yaml, right.yaml]\n")
    assert load_yaml(tmp_path / "diamond.yaml") == {"steps": 1, "lr": 0.1, "name": "r"}


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(tmp_path / "none.yaml")
    broken = _write(tmp_path / "broken.yaml", "model:\n  decoder: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML") as info:
        load_yaml(broken)
    assert "\n" not in str(info.value)
    listing = _write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_yaml(listing)
    assert load_yaml(_write(tmp_path / "empty.yaml", "# only a comment\n")) == {}


def test_overrides(tmp_path):
    base = _write(tmp_path / "base.yaml", "model:\n  decoder:\n    channels: 64\nlr: 0.001\n")
    config = load_config(Experiment, base, [
        "model.decoder.n_blocks=3",  # nested, next to a key from the file
        "lr=1e-4",
        "model.decoder.upsample=[1, 1, 2]",
        "model.quantizer.codebook_size=64",  # switches an optional section on
        "lambdas.loss/kl=0.5",
        "amp=true",
        "name=hello world",
        "threads=null",
    ])
    assert config.model.decoder == DecoderConfig(channels=64, n_blocks=3, upsample=(1, 1, 2))
    assert config.lr == 1e-4
    assert config.model.quantizer == QuantizerConfig(codebook_size=64)
    assert config.lambdas == {"loss/rec": 10.0, "loss/kl": 0.5}  # merged into the default, not replacing it
    assert config.amp is True and config.name == "hello world" and config.threads is None
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}
    for bad in ["steps", "=3", "model..decoder=1", "model.=1"]:
        with pytest.raises(ConfigError, match="not of the form key=value"):
            apply_overrides({}, [bad])
    with pytest.raises(ConfigError, match="unknown key 'model.decoder.chanels'"):
        load_config(Experiment, None, ["model.decoder.chanels=3"])


@dataclass
class WideDecoder:
    """A nested section whose default is not its class's own default."""

    decoder: DecoderConfig = field(default_factory=lambda: DecoderConfig(channels=512, n_blocks=3))
    quantizer: QuantizerConfig | None = None


def test_a_partial_overlay_of_a_section_keeps_that_sections_own_default():
    config = from_dict(WideDecoder, {"decoder": {"kernel_size": 3}})
    assert config.decoder == DecoderConfig(channels=512, n_blocks=3, kernel_size=3)  # not channels=128
    assert from_dict(WideDecoder, {}).decoder == DecoderConfig(channels=512, n_blocks=3)
    # A class default (None) still takes the class's own defaults under a partial overlay.
    assert from_dict(WideDecoder, {"quantizer": {"decay": 0.9}}).quantizer == QuantizerConfig(decay=0.9)
    assert from_dict(WideDecoder, {"quantizer": None}).quantizer is None
    with pytest.raises(ConfigError, match="decoder"):
        from_dict(WideDecoder, {"decoder": 5})


def test_deep_merge_does_not_mutate():
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    merged = deep_merge(base, {"a": {"b": 5}, "e": 6})
    assert merged == {"a": {"b": 5, "c": 2}, "d": 3, "e": 6}
    assert base == {"a": {"b": 1, "c": 2}, "d": 3}


def test_save_and_reload_round_trip(tmp_path):
    config = from_dict(Experiment, {"model": {"quantizer": {"codebook_size": 8}, "mel": {"fmax": None}},
                                    "betas": [0.5, 0.6], "lr": 1e-4})
    save_yaml(config, tmp_path / "resolved.yaml")
    assert load_config(Experiment, tmp_path / "resolved.yaml") == config
    assert to_dict(config)["betas"] == [0.5, 0.6]  # tuples become YAML lists
    assert [p.name for p in tmp_path.iterdir()] == ["resolved.yaml"]  # written atomically, no temp left
