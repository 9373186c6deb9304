import pytest

from sidrec.config import StageConfig, apply_overrides, load_config
from sidrec.errors import SidrecError


class Toy(StageConfig):
    lr: float = 1e-3
    epochs: int = 3
    tags: list[str] = []


def test_yaml_section_and_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("toy:\n  lr: 0.01\n  epochs: 5\nother: 1\n")
    c = load_config(Toy, cfg, ["toy.epochs=7", "tags=[a, b]"], section="toy")
    assert (c.lr, c.epochs, c.tags) == (0.01, 7, ["a", "b"])
    assert apply_overrides({}, ["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


def test_a_mapping_override_replaces_the_mapping():
    data = {"sft": {"tasks": {"seqrec": 1.0, "title2sid": 1.0}, "epochs": 8}}
    assert apply_overrides(data, ["sft.tasks={seqrec: 1.0}"])["sft"] == {"tasks": {"seqrec": 1.0}, "epochs": 8}
    assert apply_overrides(data, ["sft.tasks.title2sid=0"])["sft"]["tasks"] == {"seqrec": 1.0, "title2sid": 0}
    assert data["sft"]["tasks"] == {"seqrec": 1.0, "title2sid": 1.0}  # the input is not modified


def test_unknown_key_and_bad_value_are_clear(tmp_path):
    with pytest.raises(SidrecError, match="lrr.*valid keys: lr, epochs, tags"):
        load_config(Toy, None, ["lrr=1"])
    with pytest.raises(SidrecError, match="epochs"):
        load_config(Toy, None, ["epochs=many"])
    with pytest.raises(SidrecError, match="key=value"):
        load_config(Toy, None, ["epochs"])
    with pytest.raises(SidrecError, match="does not exist"):
        load_config(Toy, tmp_path / "missing.yaml")


def test_every_shipped_config_validates():
    """Each stage section of each YAML under configs/ loads into its stage's config (a renamed field would leave a
    shipped recipe that fails at run time, or silently ran defaults before StageConfig forbade unknown keys)."""
    from pathlib import Path

    from sidrec.baselines.config import SasrecConfig
    from sidrec.config import read_yaml
    from sidrec.pipeline import PipelineConfig, load_pipeline_config

    # every section the pipeline knows (so a new stage is covered without editing this test), and SASRec's own file
    stages = {name: field.annotation for name, field in PipelineConfig.model_fields.items()} | {"sasrec": SasrecConfig}
    files = [p for p in sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
             if not p.name.startswith("accelerate")]  # accelerate's own launcher config
    assert any(p.name == "rl-tilted-cpu.yaml" for p in files)
    for path in files:
        sections = read_yaml(path)
        assert sections and set(sections) <= set(stages), (path.name, sorted(sections))
        for name in sections:
            load_config(stages[name], path, section=name)
        if "sasrec" not in sections:  # the pipeline reads the same file whole, with its cross-field checks
            load_pipeline_config(path)
