"""Generation in a process of its own, ahead of the learner: bounded-staleness asynchronous RL.

With trainer.max_staleness = s > 0 the sampler (hf or vllm) runs in a spawned process with its
own thread budget and generates the training batches of the next steps while the learner
trains on the current one, never more than s policy versions behind. This is the k-step
off-policy pipeline of AReaL (Fu et al., arXiv 2505.24298) and verl's fully-async trainer, with
their decoupled objective: the clip acts on π_θ / π_old, where π_old is the learner's own
recomputation at its current weights, and the importance weight π_old / π_sampler
(algorithm.correction) accounts for the rollout having come from older weights on another
engine. Where we differ: the sampler takes new weights only between batches (never in the
middle of a generation), and rewards are scored in the learner's process.

Weights travel through shared memory (a mailbox the learner writes and the sampler copies
from, under a lock), never through disk. Requests are answered in the order they were sent.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import traceback
from collections import deque
from dataclasses import dataclass

import torch

from grpo_cli.config import GrpoConfig
from grpo_cli.data import PromptSet
from grpo_cli.environments import episode_spec, run_episodes
from grpo_cli.errors import UserError
from grpo_cli.sampler import SamplingParams, prompt_seeds
from grpo_cli.training.clock import round_prompts
from grpo_cli.training.runtime import keep_freed_memory, load_tokenizer, make_sampler, quiet_libraries
from grpo_cli.types import PromptBatch, Rollouts

POLL_SECONDS = 1.0  # how often a waiting side looks whether the other is still alive
CLOSE_SECONDS = 30.0  # how long close() waits for the sampler process before killing it


@dataclass
class Request:
    """One batch to generate. episodes: run whole episodes (training); else one sampler call
    (a turn of an evaluation episode, which runs in the learner's process)."""

    ticket: int
    batch: PromptBatch
    params: SamplingParams
    seeds: list[int]
    episodes: bool


@dataclass
class Failure:
    """The sampler process raised: what and where."""

    message: str
    user_error: bool
    trace: str


class WeightMailbox:
    """The newest policy weights in shared memory and their version. One writer (the learner),
    one reader (the sampler process); the lock keeps the reader from copying half-written
    weights."""

    def __init__(self, weights: dict[str, torch.Tensor], version: int, context):
        self.tensors = {name: t.detach().to("cpu", copy=True).share_memory_() for name, t in weights.items()}
        self._version = context.Value("q", version, lock=False)
        self.lock = context.Lock()

    @property
    def version(self) -> int:
        return self._version.value

    def write(self, weights: dict[str, torch.Tensor], version: int) -> None:
        with self.lock, torch.no_grad():
            for name, tensor in weights.items():
                self.tensors[name].copy_(tensor)
            self._version.value = version

    def relabel(self, version: int) -> None:
        """The same weights under another version (a resumed run's step)."""
        with self.lock:
            self._version.value = version

    def refresh(self, sampler) -> None:
        """Load the newest weights into `sampler` unless it holds them already."""
        if self.version == sampler.version:
            return
        with self.lock:
            sampler.load_weights(self.tensors, version=self._version.value)


def serve(cfg: GrpoConfig, policy_path: str, device: str, threads: int, mailbox: WeightMailbox, requests, results) -> None:
    """The sampler process: build the engine, then answer requests until told to stop (None)
    or until the learner's process is gone. Signals are the learner's to handle: it finishes
    its step, saves, and closes this process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(threads)
    quiet_libraries()
    keep_freed_memory()
    try:
        tokenizer = load_tokenizer(policy_path, cfg.model.trust_remote_code)
        sampler = make_sampler(cfg, policy_path, tokenizer, torch.device(device))
        sampler.version = mailbox.version
        episodes = episode_spec(cfg.environment, tokenizer)
    except Exception as error:  # reported to the learner, which stops the run with it
        results.put((None, _failure(error)))
        return
    results.put((None, "ready"))
    try:
        while (request := _next_request(requests)) is not None:
            try:
                mailbox.refresh(sampler)
                run = run_episodes if request.episodes else _generate
                out = run(sampler, request.batch, request.params, request.seeds, episodes)
            except Exception as error:  # the learner raises it at the batch that failed
                out = _failure(error)
            results.put((request.ticket, out))
    finally:
        episodes.close()
        sampler.close()


def _generate(sampler, batch: PromptBatch, params: SamplingParams, seeds: list[int], _episodes) -> Rollouts:
    return sampler.generate(batch, params, seeds)


def _next_request(requests) -> Request | None:
    while True:
        try:
            return requests.get(timeout=POLL_SECONDS)
        except queue.Empty:
            parent = multiprocessing.parent_process()
            if parent is not None and not parent.is_alive():
                return None


def _failure(error: BaseException) -> Failure:
    return Failure(message=str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}",
                   user_error=isinstance(error, UserError), trace=traceback.format_exc())


class RolloutWorker:
    """The learner's handle on the sampler process. It is a Sampler (generate, load_weights,
    sleep, wake, close, version) for evaluation, and submits training batches ahead with
    `submit` / `wait`."""

    def __init__(self, cfg: GrpoConfig, policy_path: str, device: torch.device, weights: dict[str, torch.Tensor],
                 threads: int):
        context = torch.multiprocessing.get_context("spawn")  # a fork would copy the learner's threads
        self.mailbox = WeightMailbox(weights, 0, context)
        self.requests, self.results = context.Queue(), context.Queue()
        # Not a daemon: an environment's worker pool lives inside it. close() and the parent
        # check in _next_request end it.
        self.process = context.Process(target=serve, name="grpo-sampler", daemon=False, args=(
            cfg, policy_path, str(device), threads, self.mailbox, self.requests, self.results))
        self.process.start()
        self.tickets = 0
        self.received: dict[int, Rollouts] = {}
        self._await(None)

    @property
    def version(self) -> int:
        return self.mailbox.version

    @version.setter
    def version(self, value: int) -> None:
        self.mailbox.relabel(value)

    def submit(self, batch: PromptBatch, params: SamplingParams, seeds: list[int], episodes: bool = True) -> int:
        self.tickets += 1
        self.requests.put(Request(self.tickets, batch, params, list(seeds), episodes))
        return self.tickets

    def wait(self, ticket: int) -> Rollouts:
        """The rollouts of `ticket`, keeping those of other tickets that arrive first."""
        while ticket not in self.received:
            got, out = self._await(ticket)
            self.received[got] = out
        return self.received.pop(ticket)

    def _await(self, ticket: int | None):
        while True:
            try:
                got, out = self.results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if not self.process.is_alive():
                    raise RuntimeError(f"the sampler process exited (code {self.process.exitcode}) "
                                       f"while the learner waited for batch {ticket}") from None
                continue
            if isinstance(out, Failure):
                raise (UserError(out.message) if out.user_error else
                       RuntimeError(f"the sampler process failed: {out.message}\n{out.trace}"))
            return got, out

    def generate(self, batch: PromptBatch, params: SamplingParams, seeds: list[int]) -> Rollouts:
        return self.wait(self.submit(batch, params, seeds, episodes=False))

    def load_weights(self, named_tensors: dict[str, torch.Tensor], version: int) -> None:
        self.mailbox.write(named_tensors, version)

    def sleep(self) -> None:
        """The sampler has its own threads or GPU: nothing to hand over."""

    def wake(self) -> None:
        """Nothing to take back."""

    def close(self) -> None:
        if self.process.is_alive():
            self.requests.put(None)
            self.process.join(CLOSE_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def split_threads(sampler_threads: int) -> tuple[int, int]:
    """(learner, sampler) CPU threads: sampler.threads, or half of torch's, and the rest."""
    total = torch.get_num_threads()
    sampler = sampler_threads or max(1, total // 2)
    return max(1, total - sampler), sampler


def sampler_device(learner_device: torch.device) -> torch.device:
    """The CPU beside the learner, or a GPU of its own: colocated generation stays synchronous."""
    if learner_device.type != "cuda":
        return learner_device
    if torch.cuda.device_count() < 2:
        raise UserError("trainer.max_staleness > 0 on a GPU puts the sampler on a GPU of its own and this machine "
                        "shows one; set trainer.max_staleness=0 (generation and training then take turns)")
    return torch.device("cuda", torch.cuda.device_count() - 1)


def fresh_enough(rollouts: Rollouts, learner_version: int, max_staleness: int) -> bool:
    """No row was sampled more than max_staleness policy versions before the learner's."""
    return bool((learner_version - rollouts.policy_version).max() <= max_staleness)


class Lookahead:
    """Training batches submitted ahead of the learner, at most max_staleness of them.

    Before a batch is taken, the queue is topped up to s + 1 requests, each sent at the
    learner's current version; the new one is consumed s takes later at most, and every step
    takes at least one, so it trains at most s versions after the weights it can have been
    sampled with. Batch j of the run walks the data as step j does in the synchronous loop
    (same prompts, same seeds), so without refills the two see the same prompts; a dynamic-
    sampling refill takes the next batch of the walk. A batch that is still too old (it cannot
    be, by the rule above) is dropped, never trained on."""

    def __init__(self, worker: RolloutWorker, prompts: PromptSet, params: SamplingParams, cfg: GrpoConfig, taken: int = 0):
        self.worker, self.prompts, self.params, self.cfg = worker, prompts, params, cfg
        self.taken = self.sent = taken  # on resume the batches in flight were lost: they are sent again
        self.pending: deque[tuple[PromptBatch, int]] = deque()
        self.dropped = 0

    def take(self, learner_version: int) -> tuple[PromptBatch, Rollouts]:
        while True:
            while len(self.pending) <= self.cfg.trainer.max_staleness:
                self._send()
            batch, ticket = self.pending.popleft()
            rollouts = self.worker.wait(ticket)
            self.taken += 1
            if fresh_enough(rollouts, learner_version, self.cfg.trainer.max_staleness):
                return batch, rollouts
            self.dropped += 1

    def _send(self) -> None:
        rows, seed = round_prompts(len(self.prompts), self.cfg.trainer.prompts_per_step, self.sent, 0, self.cfg.seed)
        batch = self.prompts.take(rows)
        self.pending.append((batch, self.worker.submit(batch, self.params, prompt_seeds(seed, range(len(rows))))))
        self.sent += 1
