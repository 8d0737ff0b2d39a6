"""``brainorg extract``: every artificial neuron's response to a story."""

from __future__ import annotations

_SITES = ("ffn_hidden", "ffn_out", "residual")
_ALIGNMENTS = ("glover", "spm", "lanczos", "fir")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "extract",
        help="record every artificial neuron's response to a story at the scan's volumes",
        description=(
            "Run a language model over a story's words and record, for every artificial "
            "neuron (one unit of one layer at a site), its response at each fMRI volume: "
            "word activations (mean over each word's sub-word tokens) placed at the words' "
            "scan times, convolved with the canonical HRF and sampled at the volumes, then "
            "z-scored. Writes an_responses.npy (float32, volumes x ANs), an_index.tsv "
            "(layer, unit, site per column), dropped.tsv and provenance.json into --out. "
            "Running again with the same inputs reuses the folder's results."
        ),
    )
    p.add_argument("--story", required=True,
                   help="a bundled story name (e.g. pieman) or a story file: Gentle align.json, "
                        "Narratives align.csv, a word,onset,offset CSV/TSV, or a Praat TextGrid")
    p.add_argument("--model", default="minilm",
                   help="a bundled model (minilm: BERT all-MiniLM-L6-v2; smollm2: SmolLM2-135M-Instruct, Llama, "
                        "a Q4_1 GGUF: 4-bit weight matrices, 8-bit embedding, dequantised to float32 on load), "
                        "a Hugging Face model folder, a .gguf file, or a hub id when the hub is "
                        "reachable (default: minilm)")
    p.add_argument("--tr", type=float, required=True, help="repetition time of the scan in seconds (e.g. 1.5)")
    p.add_argument("--n-volumes", type=int, required=True, help="number of fMRI volumes of the scan")
    onset = p.add_mutually_exclusive_group()
    onset.add_argument("--onset", type=float, default=None,
                       help="seconds from the first volume to the start of the story's audio, added "
                            "to every word time (default 0)")
    onset.add_argument("--events", default=None, metavar="EVENTS_TSV",
                       help="a BIDS events.tsv: the onset is the first event's onset (instead of --onset)")
    p.add_argument("--site", choices=_SITES, default="ffn_hidden",
                   help="where the ANs are read in each layer: ffn_hidden = the feed-forward "
                        "network's hidden units after the nonlinearity (the paper's ANs; default), "
                        "ffn_out = the FFN's output, residual = the layer's output hidden state")
    p.add_argument("--alignment", choices=_ALIGNMENTS, default="glover",
                   help="word -> volume operator: glover or spm (canonical HRF; default glover), "
                        "lanczos (resampling, no HRF), fir (mean of the words 2-4 volumes earlier)")
    p.add_argument("--word-durations", action="store_true",
                   help="glover/spm: each word a boxcar of its own duration instead of an impulse")
    p.add_argument("--context", type=int, default=None,
                   help="tokens per window (special tokens included); default: the model's length "
                        "for bidirectional models (512 for BERT), min(model length, 1024) for causal ones")
    p.add_argument("--min-context", type=int, default=None,
                   help="least context of a word in tokens: causal models, tokens of past (default "
                        "half a window); bidirectional, tokens on each side (default a quarter)")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present), cpu, cuda or cuda:N (default auto, as in the configuration)")
    p.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                   help="precision of the model (default auto: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--device-map", choices=("auto", "balanced", "balanced_low_0", "sequential"), default=None,
                   help="spread a model too large for one device over the GPUs, the CPU's memory and the "
                        "disk (accelerate; default: the whole model on --device)")
    p.add_argument("--max-memory", nargs="+", default=None, metavar="DEVICE=SIZE",
                   help="with --device-map: the most each device may hold, e.g. 0=70GiB cpu=100GiB")
    p.add_argument("--offload-folder", default=None,
                   help="with --device-map: folder for the weights that fit nowhere else")
    p.add_argument("--batch-words", type=int, default=512,
                   help="words whose activations are held at once (memory: words x ANs x 4 bytes; "
                        "larger helps GPUs) (default 512)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice, the number of physical cores)")
    p.add_argument("--out", required=True,
                   help="output folder: new, empty, or one written by brainorg before (reused when "
                        "the inputs are the same)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _max_memory(items):
    """``["0=70GiB", "cpu=100GiB"]`` -> ``{"0": "70GiB", "cpu": "100GiB"}``."""
    if not items:
        return None
    from ..errors import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"--max-memory takes DEVICE=SIZE items such as 0=70GiB or cpu=100GiB; "
                              f"{item!r} was provided.")
        out[key] = value
    return out


def _check_before_the_model(args, onset: float) -> None:
    """What `brainorg run` checks before a model runs: a writable --out, the story in the scan.

    Bad --tr / --n-volumes values are left to the extraction's own checks, which name them.
    """
    import warnings

    from ..io.stimuli import read_story
    from ..pipeline.validate import check_story_timing, check_writable_folder

    check_writable_folder(args.out, "--out")
    if not (args.tr > 0 and args.n_volumes > 0):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the extraction reads the story again and warns then
        words = read_story(args.story, onset=onset)
    names = {"path": "--story", "onset": "--onset / --events", "tr": "--tr", "n_volumes": "--n-volumes"}
    check_story_timing(words, n_volumes=args.n_volumes, tr=args.tr, onset=onset, names=names,
                       where=f"--story {args.story!r}", stacklevel=3)


def run(args) -> int:
    import threading
    import time
    from pathlib import Path

    from .._progress import TqdmProgress
    from ..features.extract import AN_FILES, extract_an_responses

    started = time.perf_counter()
    onset = 0.0 if args.onset is None else args.onset
    if args.events:
        from ..io.stimuli import read_story_onset

        onset = read_story_onset(args.events)
    device = args.device
    if device == "auto":
        from .._backend import cuda_available

        device = "cuda" if cuda_available() else "cpu"
    if args.threads is not None:
        if args.threads < 1:
            from ..errors import ConfigError

            raise ConfigError(f"'--threads' must be a positive number; {args.threads} was provided.")
        import torch

        torch.set_num_threads(args.threads)

    _check_before_the_model(args, onset)
    bars = TqdmProgress(disable=args.quiet)
    cancel = threading.Event()
    try:
        result = extract_an_responses(
            args.story, args.model, tr=args.tr, n_volumes=args.n_volumes, onset=onset,
            site=args.site, alignment=args.alignment,
            alignment_options={"durations": True} if args.word_durations else None,
            context=args.context, min_context=args.min_context, device=device, dtype=args.dtype,
            device_map=args.device_map, max_memory=_max_memory(args.max_memory),
            offload_folder=args.offload_folder,
            batch_words=args.batch_words, cache_dir=args.out, progress=bars, cancel=cancel,
        )
    except KeyboardInterrupt:
        cancel.set()
        raise
    finally:
        bars.close()

    prov = result.provenance
    elapsed = time.perf_counter() - started
    policy = prov.get("context_policy", {})
    print(f"\n{prov['model']['name']} ({prov['model']['architecture']}, "
          f"{'causal' if prov['model']['causal'] else 'bidirectional'}), site {prov['site']}: "
          f"{prov['n_ans_kept']} ANs kept of {prov['n_ans']} "
          f"({prov['n_layers']} layers), {prov['n_ans_dropped']} dropped")
    print(f"  story {prov['story']['source']}: {prov['story']['n_words']} words, {prov['n_tokens']} tokens, "
          f"{prov['n_windows']} window(s) of up to {policy.get('context')} tokens")
    print(f"  responses: {result.n_volumes} volumes x {result.n_ans} ANs (TR {prov['tr']} s, "
          f"{prov['alignment']['method']}), z-scored")
    if result.from_cache:
        print(f"  reused the results in {args.out} (same inputs); {elapsed:.1f} s")
    else:
        print(f"  wall time {elapsed:.1f} s on {prov['device']} ({prov['dtype']})")
    for name in AN_FILES:
        print(f"  {Path(args.out) / name}")
    return 0
