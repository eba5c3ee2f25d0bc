"""Dynamic batching: images of concurrent requests gathered into one forward pass, run off the event loop."""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Tuple, Union

import torch
from PIL import Image
from torch import Tensor

from strhub.device import autocast
from strhub.models.second_look import SecondLookOptions, read_with_second_look
from strhub.read import TextReader


class Options(NamedTuple):
    """Decoding options of a request; only images with equal options share a forward pass."""

    refine_iters: Optional[int] = None  # None: the model's
    decode_ar: Optional[bool] = None
    second_look: Optional[float] = None  # the confidence under which a word is read again; None: no second look


@dataclass
class CharReading:
    """One image's reading: the text, its confidence (as ``TextReader``: the product of the per-character
    probabilities and the [E] one), each character with its probability, and the forward pass it ran in."""

    text: str
    confidence: float
    chars: List[Tuple[str, float]]
    batch_size: int
    wait_s: float  # queued, until its forward pass started
    inference_s: float  # its forward pass and decoding (shared by the batch)


class _Item(NamedTuple):
    image: Union[Tensor, Image.Image]  # the RGB image itself with a second look (its views are cut from it)
    options: Options
    queued: float
    future: asyncio.Future


class DynamicBatcher:
    """Gathers images submitted from concurrent requests into batches of up to ``max_batch_size``: a batch starts
    when it is full or ``max_wait_ms`` after its first image arrived, whichever comes first. The forward passes run
    one at a time in a worker thread, so the event loop keeps accepting requests (and filling the next batch) while
    the model runs; images queued meanwhile go into the next pass without further wait.

    Args:
        reader: the model (checkpoint or ONNX export).
        max_batch_size: images per forward pass.
        max_wait_ms: how long the first image of a batch waits for others.

    Attributes:
        forward_passes: forward passes run so far; ``images``: images read so far.
    """

    def __init__(self, reader: TextReader, max_batch_size: int = 32, max_wait_ms: float = 5.0) -> None:
        if max_batch_size < 1:
            raise ValueError(f'max_batch_size must be >= 1 (got {max_batch_size})')
        if max_wait_ms < 0:
            raise ValueError(f'max_wait_ms must be >= 0 (got {max_wait_ms})')
        self.reader = reader
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.forward_passes = 0
        self.images = 0
        self._queue: List[_Item] = []
        self._arrived: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        # One thread: the model is not shared between concurrent forward passes (and the decoding options are set on
        # it per batch); PyTorch and onnxruntime use their own threads inside a pass.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix='strhub-infer')
        if reader.system is not None:
            model = reader.system.model
            self._defaults = Options(model.refine_iters, model.decode_ar)
        else:
            self._defaults = Options(reader.onnx.refine_iters, reader.onnx.config['decode_ar'])

    @property
    def defaults(self) -> Options:
        """The model's own decoding options."""
        return self._defaults

    def start(self) -> None:
        """Starts gathering (in the running event loop)."""
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def read(self, images: List[Union[Tensor, Image.Image]], options: Options = Options()) -> List[CharReading]:
        """Reads preprocessed images (each (3, H, W)), or with ``options.second_look`` the RGB images, batched with
        those of other requests; in order."""
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        items = [_Item(img, options, now, loop.create_future()) for img in images]
        self._queue.extend(items)
        self._arrived.set()
        return list(await asyncio.gather(*(item.future for item in items)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = self._queue[0].queued + self.max_wait_ms / 1000
            while len(self._queue) < self.max_batch_size and (delay := deadline - time.perf_counter()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), delay)
                except asyncio.TimeoutError:
                    break
            # The oldest image's options decide the batch; other options wait for a later pass, in order.
            options = self._queue[0].options
            batch = [item for item in self._queue if item.options == options][: self.max_batch_size]
            taken = {id(item) for item in batch}
            self._queue = [item for item in self._queue if id(item) not in taken]
            started = time.perf_counter()
            try:
                readings = await loop.run_in_executor(
                    self._executor, self._infer, [item.image for item in batch], options
                )
            except Exception as e:  # a failed pass fails its requests, not the server
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(e)
                continue
            self.forward_passes += 1
            self.images += len(batch)
            for item, (text, confidence, chars, inference_s) in zip(batch, readings):
                if not item.future.done():  # the client may have gone
                    item.future.set_result(
                        CharReading(text, confidence, chars, len(batch), started - item.queued, inference_s)
                    )

    def _infer(self, images: List[Tensor], options: Options) -> List[Tuple[str, float, List[Tuple[str, float]], float]]:
        start = time.perf_counter()
        reader = self.reader
        backend = reader.system if reader.onnx is None else reader.onnx
        if reader.system is not None:
            model = reader.system.model
            model.refine_iters = self._defaults.refine_iters if options.refine_iters is None else options.refine_iters
            model.decode_ar = self._defaults.decode_ar if options.decode_ar is None else options.decode_ar
        # As TextReader.read_tensor (so the texts and confidences are the same), keeping each character's probability.
        with torch.inference_mode(), autocast(reader.device, reader.precision):
            if options.second_look is None:
                logits = backend(torch.stack(images).to(reader.device))
                texts, probs = backend.tokenizer.decode(logits.float().softmax(-1))
            else:
                look = SecondLookOptions(options.second_look)
                texts, probs = read_with_second_look(reader.system, images, reader.transform, look)
        # One token per character: the first len(text) probabilities are the characters', the next the [E]'s.
        out = [(text, p.prod().item(), list(zip(text, p[: len(text)].tolist()))) for text, p in zip(texts, probs)]
        elapsed = time.perf_counter() - start
        return [(*r, elapsed) for r in out]
