"""The decode -> model -> write schedule of a run: threads, same-size batches, ordered completion.

::

    decode threads  --(in order, bounded prefetch)-->  batcher + model (calling thread)
                    --(bounded)-->  encode/write threads  -->  sink (journal, per_image.csv, report)

* Decoding (PNG inflate) and encoding (deflate) run in thread pools; Pillow and
  onnxruntime release the GIL, so the model does not wait for the disk.
* Decoded inputs are taken in input order. The batcher groups images of the same
  size; a group is run when it is full, when its oldest image is :data:`MAX_AGE`
  inputs behind (so a rare size never waits for the end), or when more than
  ``2 * batch_size + 2`` images are pending.
* A batch that fails is run again one image at a time, so only the input that breaks
  it fails.
* A volume is one input: it is read whole, its slices are prepared in the background
  and go through the model ``batch_size`` at a time as they are ready
  (:meth:`liverseg.predict.predictor.Predictor.predict_volume`), and its outputs are
  written in one write task. At most one volume is decoded ahead and one is being
  written, so memory holds a few volumes, never the prefetch depth of them.
* Writes complete in the order they were submitted; the sink sees every finished
  input once. Memory is bounded by the images in flight, never by the input count.

Timing: :attr:`Scheduler.model_seconds` is the time inside the model call alone;
:attr:`Scheduler.wall_seconds` is the whole schedule (first decode to last write).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from liverseg.core.errors import ContractError, DataError, first_line
from liverseg.core.files import DiskFullError
from liverseg.infer.inputs import Item, Loaded, load

MAX_AGE = 64  # a partial same-size group runs once its first image is this many inputs behind

Row = dict[str, Any]


class Predicts(Protocol):
    """What the schedule needs of :class:`liverseg.predict.predictor.Predictor`."""

    def model(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...  # uint8 [N,1,H,W] -> (mask, p)

    def predict_volume(self, vi: Any) -> tuple[np.ndarray, np.ndarray | None, float]: ...


Write = Callable[[Loaded, np.ndarray, np.ndarray | None, float], Row]  # (input, mask, prob, latency ms) -> row
Fail = Callable[[Item, str], Row]  # (input, error) -> row of an input without outputs
Sink = Callable[[Row], bool]  # takes a finished input's row; False: take no new inputs (--fail-fast)


@dataclass(frozen=True)
class Plan:
    """How many images go through the model at once, and how many threads decode and write."""

    batch_size: int
    decode_workers: int
    write_workers: int
    delay_s: float = 0.0  # tests only: sleep this long before each batch

    @property
    def prefetch(self) -> int:
        """Inputs being decoded ahead of the model."""
        return 2 * self.batch_size + self.decode_workers + 2

    @property
    def max_writes(self) -> int:
        """Inputs being encoded and written at once."""
        return 2 * self.batch_size + self.write_workers + 2

    @property
    def max_pending(self) -> int:
        """Decoded images waiting in same-size groups before the oldest group is run anyway."""
        return 2 * self.batch_size + 2


class Scheduler:
    """Pushes inputs through decode, model and write, and hands each finished row to ``sink``. Used once."""

    def __init__(
        self,
        plan: Plan,
        predictor: Predicts,
        write: Write,
        fail: Fail,
        sink: Sink,
        load: Callable[[Item], Loaded] = load,
        early: Callable[[Any], None] | None = None,
    ) -> None:
        self.plan = plan
        self.early = early  # called with a volume's input before the model runs on it (work that needs no mask)
        self.load = load
        self.predictor = predictor
        self.write = write
        self.fail = fail
        self.sink = sink
        self.disk_full: DiskFullError | None = None  # set when the disk filled up: the run stopped there
        self.model_seconds = 0.0
        self.n_model = 0  # inputs that went through the model
        self.wall_seconds = 0.0
        self._stop = False
        self._decoder = ThreadPoolExecutor(plan.decode_workers, thread_name_prefix="liverseg-decode")
        self._writer = ThreadPoolExecutor(plan.write_workers, thread_name_prefix="liverseg-encode")
        self._decoding: deque[Future[Loaded]] = deque()
        self._writing: deque[Future[Row]] = deque()
        self._groups: dict[tuple[int, ...], list[Loaded]] = {}
        self._held: Item | None = None  # the next input, held back while a volume is being decoded
        self._volumes_decoding: deque[Future[Loaded]] = deque()

    def run(self, todo: Iterable[Item]) -> bool:
        """Run every input of ``todo`` (until the sink says stop); True when interrupted (Ctrl-C, SIGTERM).

        On an interrupt the decodes are dropped but the writes already started are
        finished and handed to the sink, so the journal knows every file on disk.
        """
        t0 = time.perf_counter()
        interrupted = False
        try:
            self._loop(iter(todo))
        except KeyboardInterrupt:
            interrupted = True
        except DiskFullError as e:  # no input is to blame: stop taking inputs, keep what was written
            self.disk_full = e
        finally:
            interrupted = self._shut_down() or interrupted
        self.wall_seconds = time.perf_counter() - t0
        return interrupted

    def _loop(self, todo: Iterator[Item]) -> None:
        self._refill(todo)
        while (self._decoding or self._groups) and not self._stop:
            if self._decoding:
                fut = self._decoding.popleft()
                ld = fut.result()
                if fut in self._volumes_decoding:
                    self._volumes_decoding.remove(fut)
                if ld.volume is not None:
                    self._run_volume(ld)  # before the next volume is decoded: one in memory besides this one
                    self._refill(todo)
                    continue
                self._refill(todo)
                self._place(ld)
            else:  # everything is decoded: run what is left, oldest group first
                self._run_group(self._groups.pop(next(iter(self._groups))))
            self._harvest()
        self._harvest(block=True)

    def _refill(self, todo: Iterator[Item]) -> None:
        while not self._stop and len(self._decoding) < self.plan.prefetch:
            if self._held is None:
                self._held = next(todo, None)
            it = self._held
            if it is None:
                return
            if it.is_volume and self._volumes_decoding:
                return  # one volume decoded ahead at most: memory stays a volume or two, not the prefetch depth
            self._held = None
            fut = self._decoder.submit(self.load, it)
            self._decoding.append(fut)
            if it.is_volume:
                self._volumes_decoding.append(fut)

    def _place(self, ld: Loaded) -> None:
        """Put a decoded input into its same-size group; run the groups that are full, old or too many."""
        if ld.error is not None:
            self._emit(self.fail(ld.item, ld.error))
            return
        shape = ld.pixels.shape
        group = self._groups.setdefault(shape, [])
        group.append(ld)
        if len(group) >= self.plan.batch_size:
            self._run_group(self._groups.pop(shape))
        for s in [s for s, g in self._groups.items() if ld.item.index - g[0].item.index >= MAX_AGE]:
            self._run_group(self._groups.pop(s))
        while sum(len(g) for g in self._groups.values()) > self.plan.max_pending:
            self._run_group(self._groups.pop(next(iter(self._groups))))

    def _run_group(self, group: list[Loaded]) -> None:
        """One model call for a same-size group, then its writes (a failing batch is split up)."""
        if self.plan.delay_s:
            time.sleep(self.plan.delay_s)
        try:
            # one image (the CPU default): a view of it, not a copy into a new batch array
            batch = group[0].pixels[None, None] if len(group) == 1 else np.stack([g.pixels for g in group])[:, None]
            t = time.perf_counter()
            mask, prob = self.predictor.model(batch)
            dt = time.perf_counter() - t
        except ContractError:
            raise  # the model breaks its contract: no input is to blame, the run stops (exit 2)
        except Exception as e:
            if len(group) > 1:  # isolate the input that breaks the batch
                for g in group:
                    self._run_group([g])
                return
            item = group[0].item
            self._emit(self.fail(item, f"{item.image}: model failed ({first_line(e)})"))
            return
        self.model_seconds += dt
        self.n_model += len(group)
        per_ms = dt * 1000.0 / len(group)
        for k, g in enumerate(group):
            while len(self._writing) >= self.plan.max_writes:  # bounded: memory stays flat
                self._emit(self._writing.popleft().result())
            p = None if prob is None else prob[k, 0]
            self._writing.append(self._writer.submit(self.write, g, mask[k, 0], p, per_ms))
        self._harvest()

    def _run_volume(self, ld: Loaded) -> None:
        """A volume's slices through the model as they are ready; then its writes."""
        if self.plan.delay_s:
            time.sleep(self.plan.delay_s)
        item, vi = ld.item, ld.volume
        assert vi is not None
        try:
            if self.early is not None:
                self.early(vi)
            mask, prob, dt = self.predictor.predict_volume(vi)
        except ContractError:
            raise
        except DataError as e:  # its slices could not be prepared
            self._emit(self.fail(item, str(e)))
            return
        except Exception as e:
            self._emit(self.fail(item, f"{item.image}: model failed ({first_line(e)})"))
            return
        n = int(vi.model_in.shape[0])
        self.model_seconds += dt
        self.n_model += n
        while len(self._writing) >= 1:  # a volume's outputs are large: finish the previous one's first
            self._emit(self._writing.popleft().result())
        self._writing.append(self._writer.submit(self.write, ld, mask, prob, dt * 1000.0 / max(n, 1)))
        self._harvest()

    def _harvest(self, block: bool = False) -> None:
        """Hand the finished writes to the sink, in submission order (all of them when ``block``)."""
        while self._writing and (block or self._writing[0].done()):
            self._emit(self._writing.popleft().result())

    def _emit(self, row: Row) -> None:
        if not self.sink(row):
            self._stop = True

    def _shut_down(self) -> bool:
        """Drop pending decodes, finish the writes; True when an interrupt came meanwhile."""
        for f in self._decoding:
            f.cancel()
        self._decoder.shutdown(wait=True, cancel_futures=True)
        interrupted = False
        try:
            while self._writing:  # finish what is being written, so the journal knows it
                try:
                    self._emit(self._writing.popleft().result())
                except DiskFullError as e:  # that input is not journaled: --resume runs it again
                    self.disk_full = self.disk_full or e
        except KeyboardInterrupt:
            interrupted = True
        self._writer.shutdown(wait=True)
        return interrupted
