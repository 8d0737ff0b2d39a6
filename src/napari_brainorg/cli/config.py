"""``brainorg config``: print an annotated example configuration, or check one."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "config",
        help="print an annotated example configuration (--example) or check a file (--check FILE)",
        description=(
            "--example prints a complete YAML configuration for `brainorg run`: every section and "
            "option with its default value and what it means. --check FILE runs the checks `brainorg run` "
            "makes before any model runs (misspelt keys, wrong values, missing files, the story's timing, "
            "image headers: 4D, volume counts, the mask, the atlases and models, a writable 'out'), with "
            "the same messages and exit code 2, and prints the resolved configuration. NaN or constant "
            "voxels need the data: `brainorg run` finds them when it reads the runs."
        ),
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--example", action="store_true",
                      help="print an annotated example configuration (redirect it to a file to start a study)")
    what.add_argument("--check", metavar="FILE", default=None,
                      help="validate FILE and print the configuration it resolves to (exit 2 when invalid)")
    p.set_defaults(func=run)


def example_yaml() -> str:
    """A complete, annotated YAML configuration with every option at its default."""
    from pydantic import BaseModel

    from ..pipeline.config import PipelineConfig, demo_config, make_config

    # the full demo's options on its first story alone: several stories are shown below
    data = demo_config("results/my-study").model_dump()
    data["stories"] = None
    config = make_config(data, source="the example configuration")
    lines = [
        "# napari-brainorg configuration (brainorg run THIS_FILE).",
        "# Every option is shown at its default. Relative paths are taken from this file's folder.",
        "# This example runs on SIMULATED subjects (fmri.simulate); for your own data replace",
        "# 'simulate' by one of:",
        "#   images: [sub-01_bold.nii.gz, sub-02_bold.nii.gz]      # 4D NIfTI runs, one per subject",
        "#   bids: {root: /data/ds002345, task: pieman, subjects: ['001', '002']}",
        "#   regions: [sub-01_regions.tsv, sub-02_regions.tsv]       # region time series",
        "#",
        "# Several stories heard by the same subjects: replace 'story' by a list 'stories' (each",
        "# with its own timing file, onset, TR and volumes) and give each story's runs by name:",
        "#   stories:",
        "#     - {path: pieman, onset: 0.0, tr: 1.5, n_volumes: 300}",
        "#     - {name: lucy, path: lucy_align.csv, onset: 3.0, tr: 1.5, n_volumes: 370}",
        "#   fmri:",
        "#     subjects: [sub-01, sub-02]",
        "#     images:",
        "#       pieman: [sub-01_task-pieman_bold.nii.gz, sub-02_task-pieman_bold.nii.gz]",
        "#       lucy: [sub-01_task-lucy_bold.nii.gz, sub-02_task-lucy_bold.nii.gz]",
        "#   (or bids: {root: /data/ds002345, task: {pieman: pieman, lucy: lucy}})",
        "# ANs are extracted per story, the atoms learned on every story's volumes (atoms.stories:",
        "# only those), and the ridge is also scored leave-one-story-out",
        "# (encoding.leave_one_story_out); encoding.map_stories reports maps and associations",
        "# on chosen (e.g. held-out) stories.",
    ]
    import yaml

    def describe(model: BaseModel, indent: int) -> None:
        pad = "  " * indent
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                doc = (type(value).__doc__ or "").strip().splitlines()
                lines.append(f"{pad}{name}:" + (f"  # {doc[0]}" if doc else ""))
                describe(value, indent + 1)
                continue
            if value is None and name in ("bids",):
                continue
            dumped = yaml.safe_dump({name: value if not isinstance(value, tuple) else list(value)},
                                    default_flow_style=True, width=1000, sort_keys=False).strip()
            dumped = dumped[1:-1] if dumped.startswith("{") else dumped
            comment = f"  # {field.description}" if field.description else ""
            lines.append(f"{pad}{dumped}{comment}")

    describe(config, 0)
    assert isinstance(config, PipelineConfig)
    return "\n".join(lines) + "\n"


def run(args) -> int:
    import logging

    if args.example:
        print(example_yaml(), end="")
        return 0
    from ..pipeline import load_config
    from ..pipeline.config import config_to_yaml
    from ..pipeline.validate import validate_config

    config = load_config(args.check)
    # the checks `brainorg run` makes before any model runs, with the same messages
    facts = validate_config(config)
    print(config_to_yaml(config), end="")
    logging.getLogger("napari_brainorg").info(
        "%s: a valid configuration (%d words, %d in the scan; files, image headers and options checked: NaN, "
        "infinite or constant voxels need the data and are found when `brainorg run` reads them)",
        args.check, facts["n_words"], facts["n_words_in_scan"])
    return 0
