"""The benchmark scripts name only recipes that ship: every method a bench runs has a config
that validates (a bench that dies an hour in on a missing file loses the hour)."""

from __future__ import annotations

import importlib
import sys

import pytest

from conftest import REPO, tiny_teacher_yaml
from distill.config import load_config

sys.path.insert(0, str(REPO / "bench"))


@pytest.mark.parametrize(("script", "configs", "pattern"), [
    ("digits", "digits", "{method}-digits.yaml"),
    ("step_distillation", "toy2d", "{method}-8gaussians.yaml"),
])
def test_every_benchmarked_method_has_a_valid_recipe(script: str, configs: str, pattern: str):
    methods = importlib.import_module(script).METHODS
    for method in methods:
        path = REPO / "configs" / configs / pattern.format(method=method)
        assert path.is_file(), f"bench/{script}.py runs {method!r} but {path} does not exist"
        assert load_config(path).method.name == method, path


def test_every_step_distillation_dataset_has_recipes_that_validate():
    bench = importlib.import_module("step_distillation")
    assert set(bench.VARIANTS) <= set(bench.METHODS)
    named = [(m, m) for m in bench.METHODS] + [(v, m) for m, vs in bench.VARIANTS.items() for v in vs]
    for dataset in bench.DATASETS:
        found = [(m, REPO / "configs" / "toy2d" / f"{prefix}-{dataset}.yaml") for prefix, m in named]
        found = [(m, p) for m, p in found if p.is_file()]
        assert found, f"no configs/toy2d/<method>-{dataset}.yaml for any method bench/step_distillation.py runs"
        for method, path in found:
            assert load_config(path).method.name == method, path
    for variant in (v for vs in bench.VARIANTS.values() for v in vs):
        assert any((REPO / "configs" / "toy2d" / f"{variant}-{d}.yaml").is_file() for d in bench.DATASETS), variant


def test_every_step_distillation_method_with_a_toy_recipe_is_benchmarked():
    """A method that ships a toy recipe but is missing from METHODS never gets a table row."""
    bench = importlib.import_module("step_distillation")
    shipped = {load_config(p).method.name for dataset in bench.DATASETS
               for p in (REPO / "configs" / "toy2d").glob(f"*-{dataset}.yaml")}
    missing = shipped - set(bench.METHODS) - {"teacher"}
    assert not missing, f"configs/toy2d has recipes for {sorted(missing)} but bench/step_distillation.py skips them"


def test_every_distribution_matching_bench_row_validates():
    """Each row of bench/distribution_matching.py (a recipe plus its overrides) loads, the GAN
    toggle row differs from the recipe's row in its GAN, and the k = 1 row makes as many
    generator updates as the recipe."""
    bench = importlib.import_module("distribution_matching")
    for dataset in ("8gaussians", "checkerboard"):
        rows = bench.variants(dataset)
        cfgs = [load_config(REPO / "configs" / "toy2d" / f"{method}-{dataset}.yaml", overrides)
                for _, method, overrides in rows]
        assert len({label for label, _, _ in rows}) == len(rows), rows
        assert (cfgs[1].method.gan_weight > 0) != (cfgs[2].method.gan_weight > 0), dataset
        assert bench.generator_updates(cfgs[3]) == bench.generator_updates(cfgs[1]), dataset


def test_every_step_distillation_method_with_a_digits_recipe_is_benchmarked():
    """The digits twin of the toy check: a step-distillation recipe under configs/digits that
    bench/digits.py skips never reaches the digits table."""
    from distill.registry import METHODS
    bench = importlib.import_module("digits")
    shipped = {load_config(p).method.name for p in (REPO / "configs" / "digits").glob("*-digits.yaml")}
    step = {m for m in shipped
            if METHODS.get(m).__module__.startswith("distill.diffusion.methods.") and m != "teacher"}
    missing = step - set(bench.METHODS)
    assert not missing, f"configs/digits has recipes for {sorted(missing)} but bench/digits.py skips them"


def test_the_seq_kd_bench_configs_validate_and_its_prompts_are_distinct(tmp_path):
    bench = importlib.import_module("lm_seq_kd")
    n = bench.write_prompts(tmp_path / "prompts.txt")
    lines = (tmp_path / "prompts.txt").read_text().splitlines()
    assert len(set(lines)) == n == len(lines) >= 64
    for _, overrides in bench.STUDENTS:
        cfg = load_config(bench.RECIPE, [f"data.path={tmp_path / 'g.jsonl'}", *overrides])
        assert cfg.method.name in {"seq-kd", "lm-kd"}


def test_a_teacher_recipe_with_overrides_is_its_own_teacher_in_the_step_distillation_table():
    """scm's toy teacher is the standard recipe with `student.time_scale=1`: the table must
    print its rows apart from the standard teacher's, not file scm under the wrong teacher."""
    bench = importlib.import_module("step_distillation")
    scm, cd = (load_config(REPO / "configs" / "toy2d" / f"{m}-8gaussians.yaml") for m in ("scm", "cd"))
    assert bench.teacher_label(cd) == "`teacher-8gaussians`, Euler"
    assert bench.teacher_label(scm) == "`teacher-8gaussians` `student.time_scale=1`, Euler"


def test_the_lm_tables_put_the_teacher_right_below_the_header():
    common = importlib.import_module("common")
    lines = common.lm_table("| teacher | 7.0 | — | — | — |", ["| a | 1 | 2 | 3 | 4 |", "| b | 1 | 2 | 3 | 4 |"]).splitlines()
    assert lines[0].startswith("| student |") and lines[1].startswith("|---")
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["teacher", "a", "b"]


def test_a_benchmark_block_is_replaced_in_place_or_inserted_above_its_anchor(tmp_path, monkeypatch):
    common = importlib.import_module("common")
    monkeypatch.setattr(common, "REPO", tmp_path)
    (tmp_path / "BENCHMARKS.md").write_text("# Benchmarks\n\n## toy\n\n<!-- a:begin -->\nold\n<!-- a:end -->\n\n"
                                            "<!-- toy:end -->\n\n## other\n")
    common.write_block("<!-- a:begin -->", "<!-- a:end -->", "new a", before="<!-- toy:end -->")
    common.write_block("<!-- b:begin -->", "<!-- b:end -->", "new b", before="<!-- toy:end -->")
    common.write_block("<!-- c:begin -->", "<!-- c:end -->", "new c")
    assert (tmp_path / "BENCHMARKS.md").read_text() == (
        "# Benchmarks\n\n## toy\n\n<!-- a:begin -->\nnew a\n<!-- a:end -->\n\n"
        "<!-- b:begin -->\nnew b\n<!-- b:end -->\n\n<!-- toy:end -->\n\n## other\n\n"
        "<!-- c:begin -->\nnew c\n<!-- c:end -->\n")


def test_a_finished_benchmark_run_is_read_back_not_rerun(tmp_path, monkeypatch):
    common = importlib.import_module("common")
    cfg = load_config(tiny_teacher_yaml(tmp_path / "teacher.yaml", steps=20))
    eval_data, seconds = common.bench_run(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "bench.json").is_file() and not seconds.startswith("≥")

    def must_not_run(*_, **__):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr("distill.runner.run", must_not_run)
    assert common.bench_run(cfg, tmp_path / "run") == (eval_data, seconds)
    other = load_config(tmp_path / "teacher.yaml", ["train.lr=1e-3"])
    with pytest.raises(SystemExit, match="another config"):
        common.bench_run(other, tmp_path / "run")


def test_the_digits_bench_reuses_a_teacher_run_that_differs_only_in_evaluation(tmp_path):
    """`bench/digits.py --teacher RUN` takes a run of the teacher recipe evaluated with other
    settings (they do not change the weights), and refuses one trained differently."""
    from distill.config import dump_config

    digits = importlib.import_module("digits")
    recipe = REPO / "configs" / "digits" / "teacher-digits.yaml"
    for name, overrides in (("eval-differs", ["eval.timing_repeats=0"]), ("train-differs", ["train.steps=10"])):
        run_dir = tmp_path / name
        (run_dir / "student").mkdir(parents=True)
        (run_dir / "config.yaml").write_text(dump_config(load_config(recipe, overrides)))
    assert digits.reuse_teacher(tmp_path / "eval-differs")[0] == tmp_path / "eval-differs"
    with pytest.raises(SystemExit, match="is not configs/digits/teacher-digits.yaml"):
        digits.reuse_teacher(tmp_path / "train-differs")


def test_bench_run_reads_back_only_runs_of_the_same_config_and_code(tmp_path, monkeypatch):
    common = importlib.import_module("common")
    monkeypatch.setattr(common, "REUSED", [])
    cfg = load_config(tiny_teacher_yaml(tmp_path / "t.yaml", steps=20),
                      ["eval.nfe=[1]", "eval.n_samples=200", "eval.timing_repeats=0"])
    first, _ = common.bench_run(cfg, tmp_path / "run")
    assert common.REUSED == [] and "Every run was made by this invocation" in common.provenance("x")
    again, _ = common.bench_run(cfg, tmp_path / "run")
    assert again == first and common.REUSED == ["run"] and "Read back" in common.provenance("x")
    made_by = common.code_version()
    monkeypatch.setattr(common, "code_version", lambda: "newer")
    monkeypatch.setattr(common, "REUSED", [])
    common.bench_run(cfg, tmp_path / "run")
    assert common.REUSED == [] and (tmp_path / f"run.code-{made_by}" / "eval.json").is_file()
    assert (tmp_path / "run" / "bench-code").read_text() == "newer"


def test_every_render_benchmark_recipe_validates_with_its_overrides():
    bench = importlib.import_module("render")
    for _, recipe, overrides, _ in bench.RECIPES:
        cfg = load_config(REPO / "configs" / "digits" / f"{recipe}.yaml", overrides)
        assert cfg.student.name in ("gaussian-splats", "splat-generator"), recipe
        assert cfg.method.name in ("sds", "vsd-render", "prd"), recipe


def test_gate_nfe_update_replaces_only_its_methods_rows_and_names_both_invocations():
    bench = importlib.import_module("gate_nfe")
    header = ["| method | student steps | x |", "|---|---|---|"]
    old = "\n".join([bench.BEGIN, "## title", "", "Command: `old` (code aaa). Seeds 0, 1, 2; text", "",
                     *header, "| ode-pairs | 1 | old |", "| dmd2 | 1 | old |", "| vsd | 1 | old |", bench.END])
    lines, made = bench.merged_rows(old, [*header, "| dmd2 | 1 | new |"], ["dmd2"], "Command: `new` (code bbb).")
    assert lines == [*header, "| ode-pairs | 1 | old |", "| dmd2 | 1 | new |", "| vsd | 1 | old |"]
    assert made == "Rows of dmd2: Command: `new` (code bbb). The other rows: Command: `old` (code aaa)."
    twice = old.replace("Command: `old` (code aaa).", made)
    with pytest.raises(SystemExit, match="dmd2"):
        bench.merged_rows(twice, [*header, "| vsd | 1 | new |"], ["vsd"], "Command: `newer`.")
    lines, made = bench.merged_rows(twice, [*header, "| dmd2 | 1 | n2 |", "| vsd | 1 | n2 |"], ["dmd2", "vsd"], "C.")
    assert made == "Rows of dmd2, vsd: C. The other rows: Command: `old` (code aaa)."
