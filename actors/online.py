# Long on purpose: the orchestrator of the online loop reads top to bottom (start-up, one iteration, recovery,
# shutdown), like an OpenRLHF actor group; its config, evaluation and run layer live beside it.
"""The online job: Flow-DPO / Flow-RWR of the video generator on Ray (``jobs/online_dpo.py`` runs ``main``).

One iteration: the driver takes the next prompt batch (a seeded function of the iteration: resumable);
generator actors sample G clips per prompt with policy version v and have them scored by the Serve
reward deployment; Ray Data groups the samples by prompt and builds pairs (or RWR weights); the
trainer group (Ray Train + DeepSpeed, started once) runs K steps and publishes version v + 1; the
generators swap to it before their next batch. ``mode=one_step_off`` overlaps the sampling of batch
i + 1 (with version i) with training on batch i: staleness 1. At the end both the final and the
pretrained policy sample the held-out prompts with the same seeds and the oracle gives the win rate
(``world=false``: free-text prompts, no oracle; the served reward judges and the report says so).

Writes into ``out``: ``config.yaml``, ``metrics.jsonl`` (one record per iteration), ``tensorboard/``,
``checkpoints/`` (or ``storage``: a shared path or URI every node reaches; every ``checkpoint_every``
iterations and at the end: DeepSpeed state with the optimiser, the adapter, ``state.json`` with the data
position and policy version; ``latest.json`` points at the newest; Ray Train's own state under ``ray/``),
``adapter/`` (the final LoRA, in diffusers' format: ``WanPipeline.load_lora_weights`` reads it),
``evaluation.json``, ``eval_clips/``, ``summary.json``, ``report.html`` and ``run.log`` (the run's full
log: Ray, Serve and worker lines included). ``trainer.init_adapter`` starts the run from an existing LoRA.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from safetensors.torch import load_file
from safetensors.torch import save as safetensors_save
from tqdm import tqdm

from actors.cluster import FitError, check_fit, connect, hub_env, local_cpus
from actors.console import console, quiet_console
from actors.generator import GeneratorActorConfig, start_generators
from actors.online_config import OnlineConfig, prompt_batch
from actors.online_eval import describe, evaluate, iteration_record, progress_line, result_lines, summarize
from actors.preferences import preference_dataset, shard_keys, stats_of, worker_shard
from actors.refresh import due, refresh_served, roll_deployment, state_of
from actors.refresh import summary_line as refresh_line
from actors.run import Metrics, RunDir, get, log_clips, quiet_ray_data, split_even, stop_on_sigterm
from actors.status import WARM_UP, iteration_label
from actors.trainer import COORDINATOR_NAME, TrainerError, TrainerGroup
from actors.weights import ObjectStoreSync, weight_store
from rlhf.config import parse_cli, to_dict
from rlhf.generator.lora import is_adapter_dir, read_adapter, save_adapter
from serve.deployment import deploy, shutdown

log = logging.getLogger("videoalign.online")


class OnlineRun:
    def __init__(self, cfg: OnlineConfig):
        self.cfg = cfg
        self.rundir = RunDir(cfg.out, cfg.storage)
        self.storage = self.rundir.storage
        self.cluster = None
        self.gens: list = []
        self.trainer = None
        self.trainer_starts = 0
        self.trainer_failures: list[str] = []
        self.deployed = False
        self.warmed = False  # every role ran once (finish_warm_up) before the first iteration
        self.startup_s: float | None = None  # seconds from start() to the first iteration's launch
        self.reward_state = state_of(cfg.reward.model, cfg.reward.version, 0)  # what is served (refresh changes it)

    # ------------------------------------------------------------------ start-up
    def start(self) -> None:
        cfg = self.cfg
        self.t_start = time.time()
        roles = cfg.roles()  # Ray is imported by connect: a local cluster must bind 127.0.0.1
        self.cluster = connect(
            cfg.ray_address, num_cpus=cfg.num_cpus or local_cpus(roles), env_vars=hub_env(cfg.hub_cache)
        )
        console.say(
            f"[online] Ray dashboard: {self.cluster.dashboard_url or '(none on this cluster)'}; metrics "
            f"{' '.join(self.cluster.metrics_urls()) or '(none)'}"
        )
        check_fit(
            roles, autoscaling=cfg.autoscaling and not self.cluster.started, wait_s=cfg.cluster_wait_s, log=self.log
        )

        quiet_ray_data()
        self.store = weight_store(keep=3)
        self.sync = ObjectStoreSync()
        t0 = time.time()
        self.resume_state = self.rundir.latest_checkpoint() if cfg.resume else None
        if self.resume_state and self.resume_state.get("reward"):  # the reward the checkpointed run served
            self.reward_state = self.resume_state["reward"]
        gcfg = GeneratorActorConfig(
            generator=cfg.generator,
            video_shape=list(cfg.video_shape),
            fps=cfg.fps,
            text_tokens=cfg.text_tokens,
            device=cfg.generator_device,
            init_adapter=cfg.trainer.init_adapter,
            lora_rank=cfg.trainer.lora_rank,
            lora_alpha=cfg.trainer.lora_alpha,
            threads=cfg.generator_threads,
            reward_app=cfg.reward.app_name,
            sampler=cfg.sampler,
            oracle=cfg.world,
            guidance_model=cfg.guidance_model,
            guidance=cfg.guidance,
        )
        if cfg.resume and self.resume_state is None:
            raise SystemExit(
                f"error: --resume but {self.storage.location('latest.json')} does not exist: "
                "run without --resume first (or give the storage the first run used)"
            )
        # Every role starts at once: the generator actors' and trainer workers' processes load their models
        # while Serve deploys the reward (each takes 10-25 s alone on 2 cores).
        self.gens = start_generators(
            cfg.generators,
            gcfg,
            self.sync.store_name,
            cfg.generator_cpus,
            cfg.generator_gpus,
            cfg.max_restarts,
            cfg.generator_resources,
        )
        if self.resume_state:  # iterations after the checkpoint are run again: their records go
            self.rundir.truncate_metrics(self.resume_state["next_iteration"])
        self.start_trainer(self.resume_state)
        deploy(self.served_reward())
        self.deployed = True
        self.log(
            f"reward service '{cfg.reward.app_name}' ({self.reward_state['model']}, version "
            f"{self.reward_state['version']}) up in {time.time() - t0:.1f} s"
        )
        get([g.info.remote() for g in self.gens])
        self.log(f"{cfg.generators} generator actors up in {time.time() - t0:.1f} s")

    def served_reward(self):
        """The reward service's config for the reward being served (the configured one, or a refreshed one)."""
        return replace(self.cfg.reward, model=self.reward_state["model"], version=self.reward_state["version"])

    def use_reward(self, state: dict | None) -> None:
        """Serve the reward of a checkpoint ``state`` (None: the configured one) if another one is served."""
        want = (state or {}).get("reward") or state_of(self.cfg.reward.model, self.cfg.reward.version, 0)
        if (want["model"], want["version"]) != (self.reward_state["model"], self.reward_state["version"]):
            self.log(f"serving reward version {want['version']} again ({want['model']})")
            roll_deployment(self.cfg.reward, want["model"], want["version"])
        self.reward_state = want

    def refresh_reward(self, it: int, tables: list, version: int) -> dict:
        """Label pairs of iteration ``it``'s clips, fine-tune the served reward on them and roll the deployment
        to it (``actors.refresh.refresh_served``); returns the refresh's record."""
        rec, self.reward_state = refresh_served(self.cfg, self.storage, self.reward_state, it, tables, version)
        return rec

    def start_trainer(self, state: dict | None) -> None:
        """The trainer group, from ``state``'s checkpoint if given; the weight store is brought to the
        checkpoint's policy versions (newer ones, whose trainer state is gone, are forgotten)."""
        import ray

        self.trainer_starts += 1
        suffix = "" if self.trainer_starts == 1 else f"_{self.trainer_starts}"
        tcfg = replace(
            self.cfg.trainer,
            generator=self.cfg.trainer.generator or self.cfg.generator,
            video_shape=list(self.cfg.video_shape),
        )
        self.trainer = TrainerGroup(
            tcfg,
            self.sync.store_name,
            self.storage.uri,
            resume_dir=state["dir"] if state else None,
            coordinator_name=COORDINATOR_NAME + suffix,
            run_name="online_trainer" + suffix,
        )
        version = state["policy_version"] if state else 0
        have = ray.get(self.store.rollback.remote(version))
        if state:  # re-push the weights the checkpoint holds (and the version before, for one-step-off)
            with self.storage.fetched(state["dir"]) as ck:
                for v, f in ((version - 1, ck / "prev_adapter.safetensors"), (version, ck / "adapter")):
                    if v > 0 and v not in have and (f.is_file() or is_adapter_dir(f)):
                        self.sync.publish(v, read_adapter(f).state if f.is_dir() else load_file(f), restore=True)

    def recover_trainer(self, error: BaseException) -> dict | None:
        """A trainer worker died (or the group stopped answering): stop what is left of the group and
        start a new one from the last checkpoint; returns that checkpoint's state (None = from the start)."""
        self.trainer_failures.append(str(error).splitlines()[0][:300])
        if len(self.trainer_failures) > self.cfg.trainer_restarts:
            raise error
        try:
            self.trainer.stop(timeout_s=30)
        except TrainerError:
            pass
        state = self.rundir.latest_checkpoint()
        dropped = self.rundir.truncate_metrics(state["next_iteration"] if state else 0)
        where = f"checkpoint {state['dir']} (iteration {state['next_iteration']})" if state else "the start"
        self.log(
            f"trainer group failed ({self.trainer_failures[-1]}); restart {len(self.trainer_failures)} of "
            f"{self.cfg.trainer_restarts} from {where}; {dropped} iteration record(s) will be redone"
        )
        self.start_trainer(state)
        self.use_reward(state)  # a refresh after the checkpoint is redone with the iterations
        # the generators may hold weights of versions that will now be trained again: make them fetch
        get([g.forget_weights.remote() for g in self.gens])
        return state

    def log(self, msg: str) -> None:
        log.info(msg)

    # ------------------------------------------------------------------ one iteration
    def launch(self, prompts: list[str], iteration: int, version: int) -> list[dict]:
        """Send the clips of ``iteration`` to the generator actors (whole prompt groups each); returns the
        in-flight rollouts (their arguments kept, so that a lost one can be sent again)."""
        texts, seeds = prompt_batch(self.cfg, prompts, iteration)
        G, n = self.cfg.group, len(self.gens)
        jobs = []
        for a, chunk in enumerate(split_even(list(range(len(texts) // G)), n)):  # whole prompt groups
            ps = [texts[k * G + j] for k in chunk for j in range(G)]
            ss = [seeds[k * G + j] for k in chunk for j in range(G)]
            if ps:
                jobs.append({"actor": a, "args": (ps, ss, version, iteration), "attempts": 0})
                self._send(jobs[-1])
        return jobs

    def _send(self, job: dict) -> None:
        job["meta"], job["table"], job["text"] = (
            self.gens[job["actor"]].rollout.options(num_returns=3).remote(*job["args"])
        )
        job["attempts"] += 1

    def collect(self, jobs: list[dict]) -> tuple[list[dict], list, list]:
        """The rollouts' metadata, table refs and prompt-embedding refs. Ray restarts a dead actor and retries the call it died in;
        a call lost with its node (ActorUnavailableError: "may or may not have been executed") is sent
        again here, to the same (restarted) actor: sampling is a function of the seeds and the version, so
        the clips are the same and none is counted twice."""
        from ray.exceptions import RayActorError

        metas, tables, texts = [], [], []
        for job in jobs:
            while True:
                try:
                    metas.append(get(job["meta"]))
                    tables.append(job["table"])
                    texts.append(job["text"])
                    break
                except RayActorError as e:
                    if job["attempts"] > self.cfg.max_restarts:
                        raise
                    self.log(
                        f"rollout of {iteration_label(job['args'][3])} on generator {job['actor']} lost "
                        f"({type(e).__name__}); sending it again (attempt {job['attempts'] + 1})"
                    )
                    self._send(job)
        return metas, tables, texts

    def launch_warm_up(self, prompts: list[str]) -> list[dict]:
        """Queue one prompt group on every generator actor, ahead of the first iteration's batch (an actor
        runs its calls in order): its first sampling call, H.264 encode, scoring through the Serve handle and
        oracle run here, not in iteration 0."""
        texts, seeds = prompt_batch(self.cfg, prompts, 0)
        G = self.cfg.group
        jobs = []
        for a in range(len(self.gens)):
            k = a % max(len(texts) // G, 1)
            jobs.append(
                {
                    "actor": a,
                    "args": (texts[k * G : (k + 1) * G], seeds[k * G : (k + 1) * G], 0, WARM_UP),
                    "attempts": 0,
                }
            )
            self._send(jobs[-1])
        return jobs

    def finish_warm_up(self, jobs: list[dict]) -> None:
        """Ray Data's first execution (the warm-up clips' preference rows and shards) and a dry step of the
        trainer group (every rank reads its shard, runs forward and backward at the step's batch shape and
        the all-reduce; no weight or optimiser state changes), while the actors sample iteration 0."""
        t0 = time.time()
        metas, tables, texts = self.collect(jobs)
        ds = preference_dataset(tables, self.cfg.pairs, self.cfg.trainer.algo.algo, self.cfg.seed, WARM_UP)
        pstats = stats_of(ds, sum(m["n"] for m in metas), len(jobs))
        shards = [worker_shard(ds, keys) for keys in shard_keys(pstats.order, self.cfg.trainer.num_workers)]
        self.trainer.train(shards, WARM_UP, 1, None, text=texts, dry=True)
        self.log(f"warm-up done in {time.time() - t0:.1f} s (overlapping iteration 0's sampling)")

    def iterations(self, prompts: list[str], state: dict | None, metrics: Metrics, bar) -> int:
        """Iterations from ``state``'s checkpoint (None = the first) to the end; returns the final version."""
        cfg = self.cfg
        start_it = state["next_iteration"] if state else 0
        version = state["policy_version"] if state else 0
        if start_it >= cfg.iterations:
            self.log(f"nothing to do: the checkpoint is at iteration {start_it} of {cfg.iterations}")
        one_off = cfg.mode == "one_step_off"
        # one-step-off: the batch of iteration i is sampled with version i - 1 (the version before training
        # on batch i - 1); sync: with version i.
        warm = self.launch_warm_up(prompts) if not self.warmed and start_it < cfg.iterations else None
        pending = (
            self.launch(prompts, start_it, max(version - 1, 0) if (one_off and start_it > 0) else version)
            if start_it < cfg.iterations
            else None
        )
        t_launch = time.time()  # the first iteration's clock starts with its sampling
        if self.startup_s is None:
            self.startup_s = t_launch - self.t_start
            self.log(f"first iteration launched {self.startup_s:.1f} s after start-up began")
        if warm is not None:
            self.finish_warm_up(warm)
            self.warmed = True
        for it in range(start_it, cfg.iterations):
            t_it = t_launch if it == start_it else time.time()
            metas, tables, texts = self.collect(pending)
            t_rolled = time.time()
            pending = None
            refresh_due = due(cfg.refresh, it, cfg.iterations)
            sample_next = version  # one-step-off: batch i + 1 is sampled with the version before training on batch i
            # overlap: sample batch i + 1 with the current version (not before a reward refresh: every clip of an
            # iteration is scored by one reward version, so the next batch waits for the roll)
            if one_off and it + 1 < cfg.iterations and not refresh_due:
                pending = self.launch(prompts, it + 1, version)
            t0 = time.time()
            ds = preference_dataset(tables, cfg.pairs, cfg.trainer.algo.algo, cfg.seed, it)
            t_pairs = time.time() - t0
            n_samples = sum(m["n"] for m in metas)
            pstats = stats_of(ds, n_samples, n_samples // cfg.group)
            shards = [worker_shard(ds, keys) for keys in shard_keys(pstats.order, cfg.trainer.num_workers)]
            t_data = time.time() - t0
            log.info("iteration %d: pairs %.2f s, statistics and shards %.2f s", it, t_pairs, t_data - t_pairs)
            ckpt = None
            last = it + 1 == cfg.iterations
            if last or (cfg.checkpoint_every and (it + 1) % cfg.checkpoint_every == 0):
                ckpt = f"iter_{it + 1:05d}"  # under the run storage
            sample_version = metas[0]["policy_version"]
            if pstats.rows:
                res = self.trainer.train(shards, it, cfg.steps_per_iter, version + 1, ckpt, text=texts)
                version += 1
            else:
                self.log(f"iteration {it}: every prompt group is a tie under the weights; no update")
                res = {"loss": None, "implicit_accuracy": None, "train_s": 0.0, "publish": {"seconds": 0.0}}
                if ckpt:  # nothing trained: still checkpoint (same weights)
                    res = {**res, **self.trainer.train(shards, it, 0, None, ckpt)}
            refresh = None
            if refresh_due:
                refresh = self.refresh_reward(it, tables, sample_version)
                self.log(refresh_line(refresh))
            if ckpt:
                ck_state = {
                    "next_iteration": it + 1,
                    "policy_version": version,
                    "seed": cfg.seed,
                    "mode": cfg.mode,
                    "reward": self.reward_state,
                    "rng": {"prompts": [cfg.seed, it + 1], "trainer": [cfg.trainer.seed, it + 1, "rank"]},
                }
                if one_off and version > 1:
                    prev, _ = self.sync.fetch(version - 1)
                    self.storage.write_bytes(f"{ckpt}/prev_adapter.safetensors", safetensors_save(prev))
                self.rundir.write_state(ckpt, ck_state)
            if pending is None and it + 1 < cfg.iterations:
                pending = self.launch(prompts, it + 1, sample_next if one_off else version)
            wall = time.time() - t_it
            rec = iteration_record(
                cfg,
                self.reward_state,
                it,
                metas,
                pstats,
                res,
                version,
                sample_version,
                wall,
                t_rolled - t_it,
                t_data,
                queue=1 if one_off and not refresh_due and it + 1 < cfg.iterations else 0,
            )
            rec.refresh = refresh
            metrics.record(rec)
            bar.update(1)
            bar.set_postfix_str(progress_line(rec))
            self.log(describe(rec))
            line = f"[online] iteration {it + 1}/{cfg.iterations}: {progress_line(rec)}"
            if cfg.progress:
                bar.write(line, file=console.out)
            else:
                console.say(line)
        return version

    def run(self) -> dict:
        cfg = self.cfg
        prompts, _ = cfg.read_prompts()
        state = self.resume_state
        metrics = Metrics(
            self.rundir,
            "online_dpo",
            to_dict(cfg),
            resume_step=state["next_iteration"] if state else None,
            wandb_project=cfg.wandb_project,
        )
        bar = tqdm(
            total=cfg.iterations,
            initial=state["next_iteration"] if state else 0,
            desc=f"online {cfg.trainer.algo.algo} ({cfg.mode})",
            unit="iter",
            disable=not cfg.progress,
            file=console.out,
        )
        t_run = time.time()
        while True:
            try:
                version = self.iterations(prompts, state, metrics, bar)
                break
            except TrainerError as e:
                state = self.recover_trainer(e)
                metrics.tracker.purge_from(state["next_iteration"] if state else 0)
                bar.n = state["next_iteration"] if state else 0
                bar.refresh()
        bar.close()
        train_wall = time.time() - t_run
        state, lora = self.trainer.lora_adapter()  # diffusers' format: WanPipeline.load_lora_weights reads it
        save_adapter(
            self.rundir.out / "adapter",
            state,
            lora,
            {"policy_version": version, "init_adapter": cfg.trainer.init_adapter or None},
        )
        evaluation = None
        if cfg.eval_n_prompts:
            evaluation = evaluate(self, version, keep_clips=max(cfg.report_clips, 0))
            log_clips(metrics.tracker, self.rundir.out, evaluation["clips"], cfg.fps, version)
        metrics.close()
        recs = self.rundir.records()
        summary = summarize(cfg, recs, version, train_wall, evaluation, self.trainer_failures)
        summary["startup_s"] = round(self.startup_s or 0.0, 1)
        self.rundir.write_json("summary.json", summary)
        return summary

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        import ray

        if self.trainer is not None:
            try:
                self.trainer.stop()
            except Exception as e:  # noqa: BLE001 (report and go on closing)
                self.log(f"trainer group: {e}")
        for g in self.gens:
            ray.kill(g)
        if getattr(self, "store", None) is not None:
            ray.kill(self.store)
        if self.deployed:
            shutdown(self.cfg.reward)
        if self.cluster is not None:
            self.cluster.stop()


RESULTS = ("summary.json", "evaluation.json")  # a fresh run in an old directory drops these


def run(cfg: OnlineConfig) -> dict:
    """Run the online job ``cfg`` to the end (or from its last checkpoint with ``resume``); the summary."""
    cfg.validate()
    cfg.read_prompts()  # a prompt the run cannot use stops it here, before any cluster starts
    stop_on_sigterm()
    rundir = RunDir(cfg.out, cfg.storage)
    rundir.start(cfg, cfg.resume, RESULTS)
    t0 = time.time()
    job = OnlineRun(cfg)
    try:
        job.start()
        summary = job.run()
    finally:
        job.close()
    summary["total_seconds"] = round(time.time() - t0, 1)
    rundir.write_json("summary.json", summary)
    for line in result_lines(summary):
        console.say(f"[online] {line}")
    if cfg.report_clips >= 0:  # a failed report never fails a finished run
        try:
            from rlhf.eval.report import build_report

            console.say(f"[online] report: {build_report(rundir.out)}")
        except Exception as e:  # noqa: BLE001
            console.say(
                f"[online] report.html not written: {type(e).__name__}: {e} "
                f"(retry with: python -m rlhf.eval.report {rundir.out})"
            )
    console.say(f"[online] done in {summary['total_seconds']:.0f} s; run directory {rundir.out}")
    return summary


CLI_FLAGS = {
    "--out": ("out", str, "run directory"),
    "--mode": ("mode", str, "sync | one_step_off"),
    "--iterations": ("iterations", int, "online iterations"),
    "--reward": ("reward.model", str, "default | oracle | VideoReward checkpoint"),
    "--address": ("ray_address", str, "Ray cluster address"),
}


def main(argv: list[str] | None = None) -> int:
    """``python jobs/online_dpo.py [--check] [--verbose] [--resume] [key=value ...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in argv  # not a config key: the check replaces the run
    verbose = "--verbose" in argv
    argv = [a for a in argv if a not in ("--check", "--verbose")]
    cfg = parse_cli(
        OnlineConfig,
        argv,
        __doc__.splitlines()[0] + " (--check: validate the config and estimate each role's GPU memory against "
        "cluster.yaml, then exit: 0 fits, 2 does not; --verbose: Ray, Serve and worker logs on the console "
        "too, not only in <out>/run.log)",
        CLI_FLAGS,
        bool_flags={"--resume": ("resume", "continue from the latest checkpoint")},
    )
    try:
        cfg.validate()
        cfg.read_prompts()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if check:
        from rlhf.memory import check_online

        try:
            return check_online(cfg, Path(__file__).resolve().parents[1] / "cluster.yaml")
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    log_path = Path(cfg.out) / "run.log"
    if not verbose:
        print(f"[online] Ray, Serve and worker logs go to {log_path} (--verbose shows them here)", flush=True)
    try:
        with quiet_console(log_path, verbose):
            run(cfg)
    except FitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BaseException as e:
        if not verbose and not isinstance(e, (KeyboardInterrupt, SystemExit)):
            print(f"[online] failed: {type(e).__name__}: {e}; the full log is {log_path}", file=sys.stderr)
        raise
    return 0
