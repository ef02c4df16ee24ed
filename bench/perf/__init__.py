"""Performance benchmark: I-Tuning against its baselines, side by side in one process.

Builds the paper's architectures with random weights (GPT-2 base from ``ituning/configs/gpt2.json``,
ViT-B/16 from open_clip's bundled config: nothing is downloaded) and reports cost ratios, each
against a target. The rows with targets (ids kept stable because the committed reports use them):

* P1  train step time, I-Tuning (all 12 layers) vs full fine-tuning of GPT-2 base;
* P1m peak memory of those two steps (optimizer state included);
* P2  train step time, Dropping the first half of the layers vs no Dropping;
* P3  train step on cached visual tokens vs running the ViT-B/16 encoder on the fly;
* P4a beam-5 captioning throughput vs the naive path (:mod:`bench.perf.naive_kv`), identical ids;
* P4b the same vs transformers' ``generate`` called by hand inside ``visual_context``;
* P5  scoring 5,000 COCO Karpathy-test captions with one :class:`~ituning.metrics.CaptionScorer`;

plus informational rows (other baselines, and model FLOP utilisation on CUDA or with ``--mfu``).
An *arm* is one contender of a comparison (a training step, a beam search). Timings are
interleaved (A B C, C B A, ... after warm-up) so that load from other processes hits every arm
alike; a ratio is the median of the per-repetition ratios, shown with their range.

``python -m bench.perf [--quick] [--device cpu|cuda] [--out FILE]`` (default ``reports/perf.md``
on the CPU, ``reports/perf-cuda.md`` on CUDA, so that one table does not overwrite the other).

Where things are: ``settings`` (device modes, sizes), ``results`` (row ids, targets, ratios, the
report), the measuring tools ``timing``, ``memory``, ``flops`` and ``gpu_busy``, the measured
``models``, ``train_step`` and ``naive_kv``, the arms ``training_arms`` (P1-P3),
``decoding_arms`` (P4) and ``scoring_arm`` (P5), ``runner`` and ``machine`` (one run), and the
output ``explain`` (missed targets), ``render`` with ``report_template.md``, ``plot`` and ``cli``.
"""
