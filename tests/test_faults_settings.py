"""A bad setting stops the command at once: one line naming the field and the rule, exit 2, nothing loaded or trained.

Each case goes through the pipeline's config loader and through the command line (`sidrec pipeline`, and the stage's
own command where it has one); the eval options through `sidrec eval` before the (missing) model is looked at.
"""

import re
import subprocess
import sys

import pytest

from sidrec.cli import main
from sidrec.config import load_config
from sidrec.errors import SidrecError
from sidrec.pipeline import load_pipeline_config

# (--set override, what the one-line error must say: the field, then the rule)
BAD_SETTINGS = [
    ("sft.batch_size=0", r"sft\.batch_size: .*greater than or equal to 1"),
    ("sft.batch_size=-8", r"sft\.batch_size: .*greater than or equal to 1"),
    ("sft.micro_batch_size=0", r"sft\.micro_batch_size: .*greater than or equal to 1"),
    ("sft.micro_batch_size=48", r"sft\.micro_batch_size: must divide batch_size=128"),
    ("sft.epochs=-1", r"sft\.epochs: .*greater than 0"),
    ("sft.learning_rate=-0.001", r"sft\.learning_rate: .*greater than 0"),
    ("sft.learning_rate=.nan", r"sft\.learning_rate: .*finite number"),
    ("sft.learning_rate=.inf", r"sft\.learning_rate: .*finite number"),
    ("sft.warmup_ratio=1.0", r"sft\.warmup_ratio: .*less than 1"),
    ("sft.tasks={}", r"sft\.tasks: at least one task needs a weight > 0"),
    ("sft.tasks={seqrec: 0, title2sid: 0}", r"sft\.tasks: at least one task needs a weight > 0"),
    ("sft.tasks={seqrec: -1, title2sid: 1}", r"sft\.tasks: weights must be >= 0.*seqrec"),
    ("sft.tasks={seqrc: 1}", r"sft\.tasks: unknown task\(s\) \['seqrc'\]; valid: seqrec"),
    ("sft.tasks={seqrec: .nan}", r"sft\.tasks\.seqrec: .*finite number"),
    ("sft.small.num_heads=3", r"sft\.small\.num_heads: must divide hidden_size=256"),
    ("sft.small.num_kv_heads=3", r"sft\.small\.num_kv_heads: must divide num_heads=4"),
    ("sft.small.dropout=1.0", r"sft\.small\.dropout: .*less than 1"),
    ("sft.lr_scheduler=cosin", r"sft\.lr_scheduler: .*'cosine'"),
    ("sft.max_valid_rows=0", r"sft\.max_valid_rows: .*greater than or equal to 1"),
    ("sft.seed=-1", r"sft\.seed: .*greater than or equal to 0"),
    ("rl.micro_batch_size=48", r"rl\.micro_batch_size: must divide train_batch_size=512"),
    ("rl.train_batch_size=100", r"rl\.train_batch_size: must be a multiple of num_generations=32"),
    ("rl.learning_rate=0", r"rl\.learning_rate: .*greater than 0"),
    ("rl.max_grad_norm=0", r"rl\.max_grad_norm: .*greater than 0"),
    ("rl.warmup_ratio=-0.1", r"rl\.warmup_ratio: .*greater than or equal to 0"),
    ("rl.cutoff_len=0", r"rl\.cutoff_len: .*greater than or equal to 8"),
    ("eval.max_rows=0", r"eval\.max_rows: .*greater than or equal to 1"),
    ("eval.batch_size=0", r"eval\.batch_size: .*greater than or equal to 1"),
    ("eval.split=foo", r"eval\.split: .*'train', 'valid' or 'test'"),
    ("eval.dtype=int4", r"eval\.dtype: .*'fp32', 'bf16' or 'fp16'"),
    ("sid.seed=-1", r"sid\.seed: .*greater than or equal to 0"),
    ("sid.rqvae.hidden=[256, 0]", r"sid\.rqvae\.hidden\.1: .*greater than or equal to 1"),
    ("sid.rqvae.lr=.nan", r"sid\.rqvae\.lr: .*finite number"),
    ("embed.fields=[]", r"embed\.fields: .*at least 1 item"),
    ("analysis.long_tail_percent=.nan", r"analysis\.long_tail_percent: .*finite number"),
]
BAD_SET = "sft.tasks={seqrec: 1"  # an unclosed mapping


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """`sidrec ARGS` in this process: its exit code and what it wrote to stderr."""
    monkeypatch.setattr(sys, "argv", ["sidrec", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("override,message", BAD_SETTINGS, ids=[o for o, _ in BAD_SETTINGS])
def test_pipeline_loader_names_the_bad_setting(override, message):
    with pytest.raises(SidrecError, match=message):
        load_pipeline_config(None, [override])


@pytest.mark.parametrize("override,message", BAD_SETTINGS, ids=[o for o, _ in BAD_SETTINGS])
def test_pipeline_command_stops_before_any_stage(override, message, tmp_path, monkeypatch, capsys):
    code, err = run_cli(monkeypatch, capsys, "pipeline", "--out", tmp_path / "run", "--set", override)
    assert code == 2
    assert re.search(message, one_line(err))
    assert not (tmp_path / "run").exists()  # no stage ran, not even the run folder was made


STAGE_CASES = [(o, m) for o, m in BAD_SETTINGS if o.startswith(("sft.", "rl."))]


@pytest.mark.parametrize("override,message", STAGE_CASES, ids=[o for o, _ in STAGE_CASES])
def test_stage_command_stops_before_training(override, message, tmp_path, monkeypatch, capsys):
    stage = override.split(".")[0]
    inputs = ["--data", tmp_path / "no-data", "--sids", tmp_path / "no-sids", "--out", tmp_path / "out"]
    if stage == "rl":
        inputs += ["--model", tmp_path / "no-model"]
    code, err = run_cli(monkeypatch, capsys, stage, *inputs, "--set", override)
    assert code == 2
    line = one_line(err)
    assert re.search(message, line)
    assert "does not exist" not in line  # the setting was checked before the (missing) inputs were read


EVAL_OPTIONS = [
    (["--split", "foo"], r"--split: .*'train', 'valid' or 'test' \(got 'foo'\)"),
    (["--dtype", "int4"], r"--dtype: .*'fp32', 'bf16' or 'fp16' \(got 'int4'\)"),
    (["--batch-size", "0"], r"--batch-size: .*greater than or equal to 1 \(got 0\)"),
    (["--batch-size", "-4"], r"--batch-size: .*greater than or equal to 1"),
    (["--max-rows", "0"], r"--max-rows: .*greater than or equal to 1 \(got 0\)"),
    (["--beams", "0"], r"--beams: .*greater than or equal to 1"),
    (["--cutoff-len", "2"], r"--cutoff-len: .*greater than or equal to 8"),
]


@pytest.mark.parametrize("option,message", EVAL_OPTIONS, ids=[" ".join(o) for o, _ in EVAL_OPTIONS])
def test_eval_options_checked_before_the_model_loads(option, message, tmp_path, monkeypatch, capsys):
    code, err = run_cli(monkeypatch, capsys, "eval", "--model", tmp_path / "no-model", "--data", tmp_path / "d",
                        "--sids", tmp_path / "s", "--out", tmp_path / "out", *option)
    assert code == 2
    line = one_line(err)
    assert re.search(message, line), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["sft", "pipeline"])
def test_malformed_set_value_names_the_set_and_the_form(command, tmp_path, monkeypatch, capsys):
    args = ["--data", tmp_path, "--sids", tmp_path, "--out", tmp_path / "o"] if command == "sft" else \
        ["--out", tmp_path / "o"]
    code, err = run_cli(monkeypatch, capsys, command, *args, "--set", BAD_SET)
    assert code == 2
    line = one_line(err)
    assert f"--set {BAD_SET}: the value is not valid YAML" in line
    assert "key=value" in line and "ScannerError" not in line and "line 1, column" not in line


def test_set_errors_name_the_set():
    from sidrec.train.config import SftConfig

    with pytest.raises(SidrecError, match=r"--set sft\.\.epochs=2: the key must be dot-separated names"):
        load_config(SftConfig, None, ["sft..epochs=2"], section="sft")
    with pytest.raises(SidrecError, match=r"--set epochs=\[1: the value is not valid YAML"):
        load_config(SftConfig, None, ["epochs=[1"], section="sft")


def test_good_settings_still_load():
    """The bounds sit where the rules are, not tighter: edge values that are fine still validate."""
    cfg = load_pipeline_config(None, ["sft.tasks={seqrec: 1, title2sid: 0}", "sft.micro_batch_size=128",
                                      "sft.warmup_ratio=0", "sft.epochs=0.1", "sft.seed=0", "sft.lr_scheduler=linear",
                                      "sft.early_stopping_patience=null", "rl.beta=0", "rl.micro_batch_size=16",
                                      "eval.max_rows=1", "eval.split=valid", "eval.dtype=bf16"])
    assert cfg.sft.tasks == {"seqrec": 1.0, "title2sid": 0.0} and cfg.sft.micro_batch_size == 128
    assert (cfg.eval.max_rows, cfg.eval.split, cfg.rl.beta) == (1, "valid", 0.0)


def test_sasrec_heads_must_divide_hidden():
    from sidrec.baselines.config import SasrecConfig

    with pytest.raises(SidrecError, match=r"sasrec\.heads: must divide hidden=64"):
        load_config(SasrecConfig, None, ["sasrec.heads=3"], section="sasrec")
    with pytest.raises(SidrecError, match=r"sasrec\.seed: .*greater than or equal to 0"):
        load_config(SasrecConfig, None, ["sasrec.seed=-1"], section="sasrec")


def test_the_real_command_exits_2_with_one_line(tmp_path):
    """The same path as a user's shell: a separate process, its exit status and stderr."""
    r = subprocess.run([sys.executable, "-m", "sidrec", "eval", "--model", tmp_path, "--data", tmp_path, "--sids",
                        tmp_path, "--out", tmp_path / "o", "--max-rows", "0"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert "--max-rows: Input should be greater than or equal to 1 (got 0)" in one_line(r.stderr)
