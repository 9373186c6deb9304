"""Supervised fine-tuning of a causal LM on SID tasks, on Hugging Face `Trainer`.

Each example is `prompt + response + EOS`; the loss covers the response and EOS only. The trained model and its
tokenizer are saved as a plain HF folder (`OUT/model`) that AutoModelForCausalLM/AutoTokenizer reload.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from sidrec.data.canonical import Dataset
from sidrec.io import file_sha256, write_json, write_manifest
from sidrec.model.backbone import build_small_model, check_context_length, load_llm
from sidrec.model.binding import write_binding
from sidrec.model.tokenizer import build_data_tokenizer, sid_token_ids
from sidrec.tasks.builders import SEQ_TASKS, build_examples, fit_history, iter_examples
from sidrec.tasks.template import PROMPT_TEMPLATE, TASKS, encode_prompt, level_tokens
from sidrec.train.checkpoints import train_resuming
from sidrec.train.config import SftConfig, check_tracker
from sidrec.train.distributed import accumulation_steps, world_size


def train_examples(cfg: SftConfig, dataset: Dataset, codes: np.ndarray):
    """The training examples `run_sft` trains on, one at a time (`iter_examples`): the task mix, with the sampling
    and augmentation settings."""
    power = cfg.sampling.power if cfg.sampling.kind == "inverse_frequency" else 0.0
    return iter_examples(dataset, codes, "train", cfg.tasks, seed=cfg.seed, balance_power=power,
                          short_history=cfg.augment.short_history, drop_old_fraction=cfg.augment.drop_old_fraction)


class TokenizedExamples(torch.utils.data.Dataset):
    """Tokenized examples packed into flat arrays (every example's prompt + response ids in one int32 array, with
    offsets, prompt lengths and `sid_target` flags) rather than two Python lists of ints per example, which cost
    ~70 bytes a token; an example's {"input_ids", "labels"[, "sid_target"]} dict is made when the Trainer asks for it."""

    def __init__(self, ids, offsets, prompt_len, sid_target=None):
        self.ids = np.asarray(ids, dtype=np.int32)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.prompt_len = np.asarray(prompt_len, dtype=np.int32)
        self.sid_target = None if sid_target is None else np.asarray(sid_target, dtype=bool)

    def __len__(self) -> int:
        return len(self.prompt_len)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        ids = self.ids[self.offsets[i]:self.offsets[i + 1]].tolist()
        p = int(self.prompt_len[i])
        out = {"input_ids": ids, "labels": [-100] * p + ids[p:]}
        if self.sid_target is not None:
            out["sid_target"] = bool(self.sid_target[i])
        return out


def tokenize_examples(examples, tokenizer, codes: np.ndarray, cutoff_len: int,
                      sid_rows: set[int] | None = None) -> TokenizedExamples:
    """Prompt + response token ids, and labels (-100 over the prompt), packed (`TokenizedExamples`). With `sid_rows`
    (sft.loss="sid"), each example also says whether its response is made of those rows alone (`sid_target`), for
    `sid_restricted_loss`."""
    from array import array

    eos = tokenizer.eos_token_id
    ids, offsets, prompt_len, sid_target = array("i"), array("q", [0]), array("i"), array("b")
    for ex in examples:
        response = tokenizer(ex["response"], add_special_tokens=False)["input_ids"] + [eos]
        if ex["task"] in SEQ_TASKS:
            prompt, _ = fit_history(ex["task"], ex["history"], codes, tokenizer, cutoff_len - len(response))
        else:
            prompt = ex["prompt"]
        p = encode_prompt(tokenizer, prompt)
        if len(p) + len(response) > cutoff_len:
            p = p[: max(0, cutoff_len - len(response))]  # alignment prompts only: a long title is cut at the end
        ids.extend(p + response)
        offsets.append(len(ids))
        prompt_len.append(len(p))
        if sid_rows is not None:
            sid_target.append(all(t in sid_rows for t in response))
    return TokenizedExamples(ids, offsets, prompt_len, sid_target if sid_rows is not None else None)


def sid_loss_rows(tokenizer, codes: np.ndarray) -> list[int]:
    """The vocabulary rows sft.loss="sid" scores a SID response over: every SID token, and EOS."""
    return sorted({i for level in sid_token_ids(tokenizer, level_tokens(codes)) for i in level}
                  | {tokenizer.eos_token_id})


def sid_restricted_loss(model, inputs: dict, rows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(summed cross-entropy, number of target tokens) of a batch, where an example whose response is SID tokens
    (`inputs["sid_target"]`) is scored over the vocabulary `rows` only and any other over the whole vocabulary.

    The output projection over a 151,936-token vocabulary is ~95% of an SFT step (docs/benchmarks.md, SFT), and a
    SID response only ever competes with other SIDs at decoding time (the trie forbids the rest). The model runs
    through its own forward (so DDP/DeepSpeed wrappers see the call), asked for full-vocabulary logits only at the
    free-text targets (`logits_to_keep` as a boolean mask); the final hidden states of the SID targets are read
    from the decoder's output and projected on `rows` of the head. With `rows` = the whole vocabulary this equals
    the model's own loss.
    """
    import torch.nn.functional as F
    from accelerate.utils import extract_model_from_parallel

    labels = inputs["labels"]
    targets = labels[:, 1:]
    counted = targets != -100
    sid = inputs["sid_target"].bool()[:, None]
    restricted, free = counted & sid, counted & ~sid
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = free  # position t predicts label t+1
    base = extract_model_from_parallel(model)  # under DDP/DeepSpeed wrappers, what Accelerator.unwrap_model gives
    hidden = {}

    def keep_last_hidden(_module, _args, output):  # returns None: the output goes on unchanged
        hidden["last"] = output[0]

    hook = base.get_decoder().register_forward_hook(keep_last_hidden)
    try:
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], logits_to_keep=keep)
    finally:
        hook.remove()
    total = F.cross_entropy(out.logits.float(), targets[free], reduction="sum")
    if restricted.any():
        weight = base.get_output_embeddings().weight
        logits = hidden["last"][:, :-1][restricted] @ weight[rows].T
        column = torch.full((weight.shape[0],), -1, dtype=torch.long, device=rows.device)  # vocabulary id -> row
        column[rows] = torch.arange(len(rows), device=rows.device)
        total = total + F.cross_entropy(logits.float(), column[targets[restricted]], reduction="sum")
    return total, int(counted.sum())


def seeded_trainer_class():
    """HF `Trainer` whose length-grouped sampler is seeded per epoch (seed + epoch).

    HF's training `LengthGroupedSampler` draws its permutation from the global RNG, which a resumed run restores to
    the state of the checkpoint, not of the epoch's start: the resumed run then trains on other batches. Seeding
    the sampler from (seed, epoch) makes a killed and resumed run train exactly like an uninterrupted one.
    """
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        def __init__(self, *args, seed: int, **kw):
            super().__init__(*args, **kw)
            self.seed = seed
            self.set_epoch(0)

        def set_epoch(self, epoch: int) -> None:
            self.generator = torch.Generator().manual_seed(self.seed + int(epoch))

    class SeededTrainer(Trainer):
        sid_rows: torch.Tensor | None = None  # set for sft.loss="sid": the rows `sid_restricted_loss` scores over

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.sid_rows is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            total, count = sid_restricted_loss(model, inputs, self.sid_rows.to(inputs["labels"].device))
            # normalised as HF normalises its own causal-LM loss: by the target tokens of the whole accumulated
            # (and, across processes, gathered) batch when the Trainer counts them, else by this batch's
            self.loss_is_scaled_for_ga = num_items_in_batch is not None
            if num_items_in_batch is None:
                loss = total / max(count, 1)
            else:
                loss = total / num_items_in_batch
                if self.args.average_tokens_across_devices:
                    loss = loss * self.accelerator.num_processes
            return (loss, {"loss": loss}) if return_outputs else loss

        def _get_train_sampler(self, train_dataset=None):
            if self.args.train_sampling_strategy != "group_by_length":
                return super()._get_train_sampler(train_dataset)
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            # grouped by the global batch, so N processes train on the same batches as one (each its share)
            return EpochSeededLengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size,
                dataset=dataset,
                model_input_name="input_ids", seed=seed)

    return SeededTrainer


class PadCollator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch):
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        out = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        if "sid_target" in batch[0]:
            out["sid_target"] = torch.tensor([b["sid_target"] for b in batch])
        return out


def _freeze_all_but_sid_rows(model, sid_ids: list[int]) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
    keep = torch.zeros(model.get_input_embeddings().weight.shape[0], 1)
    keep[sid_ids] = 1.0
    for emb in {model.get_input_embeddings().weight, model.get_output_embeddings().weight}:
        emb.requires_grad_(True)
        emb.register_hook(lambda g, k=keep: g * k.to(g.device, g.dtype))


def prepare_model(cfg: SftConfig, dataset: Dataset, codes: np.ndarray):
    sid_tokens = [t for level in level_tokens(codes) for t in level]
    if cfg.base_model == "small":
        # the template and instructions open every prompt: repeating them makes BPE merge them into few tokens
        texts = dataset.titles() + ([PROMPT_TEMPLATE] + list(TASKS.values())) * 500
        tokenizer = build_data_tokenizer(texts, sid_tokens, vocab_size=cfg.small.vocab_size)
        model = build_small_model(tokenizer, cfg.small, seed=cfg.seed)
    else:
        tokenizer, model = load_llm(cfg.base_model, sid_tokens, dtype="bf16" if cfg.bf16 else "fp32",
                                    trust_remote_code=cfg.trust_remote_code)
    check_context_length(model, cfg.cutoff_len, "sft.cutoff_len")
    if cfg.freeze_llm:
        _freeze_all_but_sid_rows(model, tokenizer.convert_tokens_to_ids(sid_tokens))
    elif cfg.lora is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                                                 lora_dropout=cfg.lora.dropout,
                                                 target_modules=cfg.lora.target_modules,
                                                 modules_to_save=["embed_tokens", "lm_head"], task_type="CAUSAL_LM",
                                                 # a tied head (Qwen2.5 0.5B-3B) stays tied: one trained copy
                                                 ensure_weight_tying=bool(model.config.tie_word_embeddings)))
    return tokenizer, model


def training_arguments(cfg: SftConfig, out: str | Path, num_train: int):
    """HF `TrainingArguments` for `num_train` tokenized examples (evaluation/saving every `eval_steps`)."""
    from transformers import TrainingArguments

    world = world_size()
    accum = accumulation_steps(cfg.batch_size, cfg.micro_batch_size, ("batch_size", "micro_batch_size"))
    steps_per_epoch = math.ceil(num_train / (cfg.micro_batch_size * accum * world))
    eval_steps = max(1, int(cfg.eval_steps * steps_per_epoch) if cfg.eval_steps < 1 else int(cfg.eval_steps))
    return TrainingArguments(
        output_dir=str(Path(out) / "checkpoints"),
        per_device_train_batch_size=cfg.micro_batch_size, per_device_eval_batch_size=cfg.micro_batch_size * 2,
        gradient_accumulation_steps=accum, num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay, warmup_steps=int(cfg.warmup_ratio * steps_per_epoch * cfg.epochs),
        lr_scheduler_type=cfg.lr_scheduler, bf16=cfg.bf16, gradient_checkpointing=cfg.gradient_checkpointing,
        eval_strategy="steps", eval_steps=eval_steps, save_strategy="steps", save_steps=eval_steps,
        save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
        logging_steps=max(1, eval_steps // 5), report_to=cfg.report_to, seed=cfg.seed, data_seed=cfg.seed,
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=False, deepspeed=cfg.deepspeed,
        # prompts run from ~20 to ~130 tokens; batching similar lengths halves the padded tokens on this data
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        use_cpu=not torch.cuda.is_available(), dataloader_pin_memory=torch.cuda.is_available(),
    )


def train_period(train) -> dict:
    """What a manifest records of the rows a model trained on: their number and the last target's time (None when
    the data has no timestamps), so a later `sidrec update` can refuse a slice that overlaps them."""
    ts = train["timestamp"]
    end = int(ts.max()) if len(ts) and ts.notna().all() else None
    return {"num_rows": len(train), "end_timestamp": end}


def run_sft(cfg: SftConfig, data_dir: str | Path, sids: str | Path, out: str | Path, *,
            examples: list[dict] | None = None, stage: str = "sft", record: dict | None = None) -> Path:
    """Train on `data_dir` with `sids`; the model goes to OUT/model, the manifest (`stage`) last.

    `examples` (built by the caller, e.g. `sidrec.train.update`) replace `train_examples`' task mix; `record` adds
    fields to the manifest (its `inputs` to the manifest's inputs)."""
    from transformers import EarlyStoppingCallback

    from sidrec.sid.io import INDEX_FILE, load_sids

    t0 = time.time()
    out = Path(out)
    (out / "manifest.json").unlink(missing_ok=True)  # from here until the end the run is unfinished
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    accumulation_steps(cfg.batch_size, cfg.micro_batch_size, ("batch_size", "micro_batch_size"))  # before loading
    check_tracker(cfg.report_to, "sft.report_to")
    dataset = Dataset.load(data_dir)
    codes, _ = load_sids(sids)
    sids_file = Path(sids) / INDEX_FILE if Path(sids).is_dir() else Path(sids)
    tokenizer, model = prepare_model(cfg, dataset, codes)

    if examples is None:
        examples = train_examples(cfg, dataset, codes)
    rows = sid_loss_rows(tokenizer, codes) if cfg.loss == "sid" else None
    sid_rows = set(rows) if rows else None
    # examples stream from the builder into the packed arrays: one dict at a time, never the whole training set
    train = tokenize_examples(examples, tokenizer, codes, cfg.cutoff_len, sid_rows)
    del examples
    valid_examples = build_examples(dataset, codes, "valid", {"seqrec": 1.0}, seed=cfg.seed)
    if cfg.max_valid_rows and len(valid_examples) > cfg.max_valid_rows:
        pick = np.random.default_rng(cfg.seed).choice(len(valid_examples), cfg.max_valid_rows, replace=False)
        valid_examples = [valid_examples[i] for i in sorted(pick)]
    valid = tokenize_examples(valid_examples, tokenizer, codes, cfg.cutoff_len, sid_rows)

    args = training_arguments(cfg, out, len(train))
    callbacks = [EarlyStoppingCallback(cfg.early_stopping_patience)] if cfg.early_stopping_patience else []
    from sidrec.train.logs import log_progress

    SeededTrainer = seeded_trainer_class()
    trainer = SeededTrainer(model=model, args=args, data_collator=PadCollator(tokenizer.pad_token_id), train_dataset=train,
                      eval_dataset=valid, processing_class=tokenizer, callbacks=callbacks)
    if rows:
        trainer.sid_rows = torch.tensor(rows)
    log_progress(trainer)
    last = train_resuming(trainer, "sft")  # from the newest whole checkpoint; a full disk is a one-line error
    if not trainer.is_world_process_zero():  # under accelerate launch one process saves the run
        return out / "model"

    model = trainer.model
    if cfg.lora is not None and not cfg.freeze_llm:
        model = model.merge_and_unload()
    # the HF folder is several files: write it beside, then swap it in, so `model/` is always whole
    model_dir, staging = out / "model", out / ".model.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    write_binding(staging, codes, sids, data_dir)  # the SIDs and data it was trained on, its weights' sha256
    shutil.rmtree(model_dir, ignore_errors=True)
    staging.rename(model_dir)
    write_json(out / "train_log.json", list(trainer.state.log_history))
    record = dict(record or {})
    inputs = {"data": data_dir, "sids": sids, **record.pop("inputs", {})}
    write_manifest(out, stage, config=cfg.model_dump(), inputs=inputs, seconds=time.time() - t0,
                   extra={"best_checkpoint": trainer.state.best_model_checkpoint,
                          "best_eval_loss": trainer.state.best_metric, "resumed_from": last,
                          "num_train_examples": len(train), "global_step": trainer.state.global_step,
                          "train_period": train_period(dataset.splits["train"]),
                          "sids_sha256": file_sha256(sids_file), **record})
    return model_dir
