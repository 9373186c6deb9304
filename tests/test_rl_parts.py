"""The parts of `sidrec.train.rl` on their own: settings and defaults, prompts, losses, the trainer's settings and
its valid-ranking callback (the whole stage on a toy: tests/test_rl.py)."""

import collections
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from sidrec.config import load_config
from sidrec.errors import SidrecError
from sidrec.train.rl import RlConfig, check_settings, prompt_frame, run_rl, tilted_advantages
from sidrec.train.rl.losses import tilt_batch, trl_loss_args
from sidrec.train.rl.prompts import prompt_dataset

CONFIGS = Path(__file__).parents[1] / "configs"
TRAIN = pd.DataFrame({"user": [7, 3, 7, 3, 7, 5], "history": [[1], [2], [1, 4], [2, 6], [1, 4, 8], [9]],
                      "target": [4, 6, 8, 0, 2, 1]})


# ---------------------------------------------------------------------------------------------- settings, defaults
def test_defaults_are_the_tilted_recipe_and_rl_cpu_is_minionerecs():
    tilted = load_config(RlConfig, CONFIGS / "rl-tilted-cpu.yaml", section="rl")
    recipe = tilted.model_dump(exclude={"scorer", "threads"})
    assert recipe == RlConfig().model_dump(exclude={"scorer", "threads"})
    check_settings(tilted)
    mini = load_config(RlConfig, CONFIGS / "rl-cpu.yaml", section="rl")
    assert (mini.rewards, mini.prompts, mini.loss, mini.scale_rewards, mini.beta, mini.num_generations) == (
        {"rule": 1.0, "ranking": 1.0}, "rows", "grpo", "group", 1e-3, 16)
    check_settings(mini)  # runs without a scorer
    from sidrec.pipeline import load_pipeline_config

    for path in ("cpu.yaml", "smoke.yaml"):  # the pipelines' RL sections take the scorer stage's runs
        cfg = load_pipeline_config(CONFIGS / path)
        assert cfg.scorer.enabled and cfg.rl.scorer is None
        check_settings(RlConfig(**{**cfg.rl.model_dump(exclude={"enabled"}), "scorer": "SCORER"}))
    cpu = load_pipeline_config(CONFIGS / "cpu.yaml").rl.model_dump(exclude={"scorer", "threads", "enabled"})
    assert cpu == recipe  # make demo runs the recipe


def test_default_settings_without_a_scorer_fail_in_one_line_naming_rl_scorer(tmp_path):
    with pytest.raises(SidrecError, match=r"needs rl\.scorer") as e:
        run_rl(RlConfig(), tmp_path / "no_model", tmp_path / "no_data", tmp_path / "no_sids", tmp_path / "out")
    assert "\n" not in str(e.value) and "configs/rl-cpu.yaml" in str(e.value)
    assert not (tmp_path / "out").exists()  # failed before anything was loaded or written


@pytest.mark.parametrize("kw, match", [
    ({"prompts": "rows", "rewards": {"rule": 1.0}}, "extend_prompts"),
    ({"extend_prompts": 0, "scorer": "s"}, "suffix_prompts"),
    ({"add_target": True, "scorer": "s"}, "add_target"),
    ({"beta": 0.0, "scorer": "s"}, "tilted needs beta > 0"),
    ({"train_batch_size": 96, "scorer": "s"}, "must be a multiple of micro_batch_size=256 x 1 processes"),
])
def test_bad_combinations_fail_before_loading(kw, match):
    with pytest.raises(SidrecError, match=match):
        check_settings(RlConfig(**kw))


@pytest.mark.parametrize("field, value", [("num_generations", 1), ("learning_rate", 0), ("beta", -1),
                                          ("warmup_ratio", 1.0), ("max_valid_rows", 0), ("threads", 0)])
def test_numeric_settings_are_bounded(field, value):
    with pytest.raises(ValueError):
        RlConfig(**{field: value})


# ------------------------------------------------------------------------------------------------------- prompts
def test_prompt_frame_rows_and_after_train():
    rows = RlConfig(prompts="rows", extend_prompts=0, suffix_prompts=0)
    assert prompt_frame(rows, TRAIN, 3) is TRAIN
    after = prompt_frame(RlConfig(extend_prompts=0, suffix_prompts=0), TRAIN, 3)
    assert after["user"].tolist() == [3, 7, 5] and after["history"].tolist() == [[2, 6, 0], [4, 8, 2], [9, 1]]
    assert (after["target"] == -1).all()  # no target: the next item is after the training data


def test_prompt_dataset_keeps_each_rows_target_history_and_user():
    class Tok:  # fit_history counts tokens; one per character is enough here (no BOS, as Qwen)
        bos_token_id = None

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": list(range(len(text)))}

    codes = np.array([[i % 3, i // 3] for i in range(10)])
    ds = prompt_dataset(TRAIN, np.array([4, 1]), codes, Tok(), 1000)
    assert [(r["row"], r["target"], r["history"], r["user"]) for r in ds] == [(4, 2, [1, 4, 8], 7), (1, 6, [2], 3)]
    assert all("<a_" in r["prompt"] for r in ds)  # the history as SID tokens


# -------------------------------------------------------------------------------------------------------- losses
def test_trl_loss_args():
    assert trl_loss_args(RlConfig()) == {"beta": 0.0, "loss_type": "grpo", "scale_rewards": "none"}
    grpo = RlConfig(loss="grpo", beta=0.04, scale_rewards="group")
    assert trl_loss_args(grpo) == {"beta": 0.04, "loss_type": "grpo", "scale_rewards": "group"}


def test_tilt_batch_scales_the_tilted_advantages_and_reports_the_kl_to_the_optimum():
    ref = torch.log(torch.tensor([0.5, 0.5, 0.8, 0.2]))
    adv = torch.tensor([0.5, -0.5, 0.0, 0.0])
    batch = {"advantages": adv.clone(), "completion_ids": torch.zeros((4, 3), dtype=torch.long)}
    kl = tilt_batch(batch, ref, ref, 1.0, 2)
    assert torch.allclose(batch["advantages"], tilted_advantages(ref, ref, adv, 1.0, 2) * 6)  # x G * C
    q = torch.tensor([0.7311, 0.2689])
    assert kl == pytest.approx(float((q * (q / 0.5).log()).sum() / 2), abs=1e-3)  # group 2 is at its optimum
    batch["advantages"] = adv.clone()
    assert tilt_batch(batch, ref + adv, ref, 1.0, 2) == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(batch["advantages"], torch.zeros(4), atol=1e-6)


# ------------------------------------------------------------------------------------------- trainer and callback
def test_grpo_args_batch_and_evaluation_steps(tmp_path):
    from sidrec.train.rl.trainer import grpo_args

    cfg = RlConfig(num_generations=8, train_batch_size=64, micro_batch_size=16, eval_step=0.25, seed=3)
    args, every = grpo_args(cfg, tmp_path, num_prompts=80, reward_weights=[1.0, 0.5], completion_len=4)
    # 8 prompts per step: 10 steps, a valid evaluation (and a checkpoint) every 2
    assert every == 2 and args.save_steps == 2 and args.gradient_accumulation_steps == 4
    assert args.beta == 0.0 and args.num_generations == 8 and args.reward_weights == [1.0, 0.5]
    assert grpo_args(cfg.model_copy(update={"eval_step": 3}), tmp_path, 80, [1.0], 4)[1] == 3


def test_valid_rows_all_or_a_seeded_sample():
    from sidrec.train.rl.trainer import valid_rows

    hist, targets = valid_rows(TRAIN, None, 0)
    assert hist == [list(h) for h in TRAIN["history"]] and targets.tolist() == TRAIN["target"].tolist()
    hist, targets = valid_rows(TRAIN, 3, 0)
    assert len(hist) == 3 and [TRAIN["target"][TRAIN["history"].map(list).tolist().index(h)] for h in hist] == \
        targets.tolist()


class FakeModel:
    def __init__(self, tag):
        self.tag = tag

    def save_pretrained(self, folder, safe_serialization=True):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "tag").write_text(self.tag)


class FakeTokenizer:
    def save_pretrained(self, folder):
        (Path(folder) / "tokenizer").write_text("t")


def test_valid_ranking_keeps_the_best_model_and_resumes_its_history(tmp_path):
    from sidrec.train.rl.trainer import ValidRanking

    trainer = SimpleNamespace(accelerator=SimpleNamespace(is_main_process=True, unwrap_model=lambda m: m),
                              _metrics={"train": collections.defaultdict(list)})
    scores = iter([0.2, 0.3, 0.25])
    cb = ValidRanking(trainer, FakeTokenizer(), lambda m: {"HR@10": 0.5, "NDCG@10": next(scores)}, tmp_path, 2,
                      keep_best=True)
    cb.on_train_begin(None, SimpleNamespace(global_step=0, max_steps=6), None, model=FakeModel("start"))
    for step in range(1, 5):  # stopped after step 4 of 6
        cb.on_step_end(None, SimpleNamespace(global_step=step, max_steps=6), None, model=FakeModel(f"step{step}"))
    history = json.loads((tmp_path / "valid_history.json").read_text())
    assert [h["step"] for h in history] == [0, 2, 4] and [h["NDCG@10"] for h in history] == [0.2, 0.3, 0.25]
    assert (tmp_path / "best_model" / "tag").read_text() == "step2"  # 0.3 beat 0.2; 0.25 did not
    assert trainer._metrics["train"]["valid/NDCG@10"] == [0.2, 0.3, 0.25]
    # a resumed run reads the history back: no second step-0 measurement, the best to beat stays 0.3
    again = ValidRanking(trainer, FakeTokenizer(), lambda m: {"HR@10": 0.5, "NDCG@10": 0.28}, tmp_path, 2, True)
    again.on_train_begin(None, SimpleNamespace(global_step=4, max_steps=6), None, model=FakeModel("x"))
    for step in (5, 6):
        again.on_step_end(None, SimpleNamespace(global_step=step, max_steps=6), None, model=FakeModel(f"step{step}"))
    assert [h["step"] for h in again.history] == [0, 2, 4, 6]  # the last step is always measured
    assert (tmp_path / "best_model" / "tag").read_text() == "step2"


# ------------------------------------------------------------------------------------------- the default recipe
def test_the_default_recipe_runs_with_a_scorer(tmp_path):
    """The defaults (tilted loss, after_train prompts with continuations and suffixes, SASRec + novelty + popularity
    rewards), scaled down to the toy: every prompt source is used and the tilted loss is logged."""
    from generative_fixtures import train_toy_sft
    from sidrec.baselines import SasrecConfig, run_sasrec
    from sidrec.data import Dataset

    data, sids, sft = train_toy_sft(tmp_path, epochs=1, eval_steps=100)
    run_sasrec(data, tmp_path / "sasrec", SasrecConfig(hidden=16, blocks=1, heads=1, max_epochs=2, threads=1, seed=0),
               progress=False)
    cfg = RlConfig(scorer=str(tmp_path / "sasrec"), num_generations=8, train_batch_size=32, micro_batch_size=32,
                   extend_prompts=1, suffix_prompts=1, eval_beams=10, max_valid_rows=20, eval_step=0.5, seed=0)
    run_rl(cfg, sft, data, sids, tmp_path / "rl")
    manifest = json.loads((tmp_path / "rl" / "manifest.json").read_text())
    users = Dataset.load(data).splits["train"]["user"].nunique()
    assert manifest["status"] == "done" and manifest["num_train_prompts"] == 3 * users  # end + continued + suffix
    log = json.loads((tmp_path / "rl" / "train_log.json").read_text())
    assert any("rl/kl_to_group_optimum" in e and "rewards/collaborative/mean" in e for e in log)
