//! The study's design: presets, paired prompts, segments, and the checks an
//! experiment file goes through before any model work.

use engine::experiment::{ConfigError, Experiment, ExperimentFile};

fn paper() -> Experiment {
    Experiment::preset("paper").unwrap_or_else(|e| panic!("{e}"))
}

fn build(text: &str) -> Result<Experiment, ConfigError> {
    Experiment::build(
        ExperimentFile::parse(text, "test.toml")?,
        "test.toml",
        Some(text),
    )
}

fn error_of(text: &str) -> String {
    build(text).expect_err("must be refused").to_string()
}

const CUSTOM: &str = r#"
name = "capitals"

[[tasks]]
kind = "custom"
name = "capitals"
shots = 2
template = '''{% for d in demonstrations %}{{ d.country }}: {{ d.answer }}
{% endfor %}{% filter segment("query") %}{{ target.country }}:{% endfilter %}'''

[[tasks.instances]]
condition = "europe"
answer = "Paris"
params = { continent = "europe", size = 3 }
vars = { country = "France" }

[[tasks.instances]]
condition = "europe"
answer = "Rome"
params = { continent = "europe", size = 2 }
vars = { country = "Italy" }

[[tasks.instances]]
condition = "asia"
answer = "Tokyo"
params = { continent = "asia", size = 2 }
vars = { country = "Japan" }

[[tasks.instances]]
condition = "asia"
answer = "Hanoi"
params = { continent = "asia", size = 1 }
vars = { country = "Vietnam" }

[[tasks.hypotheses]]
name = "same continent"
kind = "matrix"
conditions = ["asia", "europe"]
matrix = [[1.0, 0.2], [0.2, 1.0]]
"#;

#[test]
fn the_paper_preset_pairs_every_target_with_and_without_demonstrations() {
    let e = paper();
    assert_eq!(e.tasks.len(), 2);
    for (t, task) in e.tasks.iter().enumerate() {
        let prompts: Vec<_> = e.prompts.iter().filter(|p| p.task == t).collect();
        // One 0-shot prompt per target, and one k-shot prompt per draw.
        let draws = e.file.robustness.variants();
        assert_eq!(draws, 3);
        assert_eq!(prompts.len(), (1 + draws) * task.instances.len());
        for (target, draw) in task
            .instances
            .iter()
            .flat_map(|i| (0..draws).map(move |d| (i, d)))
        {
            let zero = prompts
                .iter()
                .find(|p| p.target == target.id && p.shots == 0)
                .expect("0-shot prompt");
            assert_eq!(zero.draw, 0);
            let k = prompts
                .iter()
                .find(|p| p.target == target.id && p.shots == task.shots && p.draw == draw)
                .expect("k-shot prompt");
            assert_eq!(k.demonstrations.len(), task.shots);
            // Same instruction, same target and query; only the demonstrations differ.
            let demos = k.segments["demonstrations"][0].clone();
            let without = format!("{}{}", &k.text[..demos.start], &k.text[demos.end..]);
            assert_eq!(
                without, zero.text,
                "task {} target {}",
                task.name, target.id
            );
        }
    }
    assert_eq!(
        e.prompts.iter().map(|p| p.id).collect::<Vec<_>>(),
        (0..e.prompts.len()).collect::<Vec<_>>()
    );
}

#[test]
fn prompts_are_deterministic_from_the_seed() {
    let a = paper();
    assert_eq!(a.prompts, paper().prompts);
    let mut file = ExperimentFile::preset("paper").expect("preset");
    file.seed += 1;
    let b = Experiment::build(file, "reseeded", None).expect("build");
    assert_ne!(a.prompts, b.prompts);
}

#[test]
fn reading_comprehension_balances_the_order_of_relevant_and_distractor() {
    let e = paper();
    let task = &e.tasks[1];
    for condition in 0..task.conditions.len() {
        let firsts: Vec<bool> = task
            .instances
            .iter()
            .filter(|i| i.condition == condition)
            .map(|i| i.context["relevant_first"].as_bool().expect("flag"))
            .collect();
        let relevant_first = firsts.iter().filter(|&&f| f).count();
        assert_eq!(2 * relevant_first, firsts.len(), "condition {condition}");
    }
    // And the segments say so: the relevant span comes first exactly then.
    for p in e.prompts.iter().filter(|p| p.task == 1) {
        let first = task.instances[p.target].context["relevant_first"]
            .as_bool()
            .expect("flag");
        assert_eq!(
            p.segments["relevant"][0].start < p.segments["distractor"][0].start,
            first
        );
        assert_eq!(
            &p.text[p.segments["relevant"][0].clone()],
            task.instances[p.target].context["relevant"]
        );
    }
}

#[test]
fn nothing_of_the_answer_leaks_into_the_prompt() {
    let e = paper();
    for p in &e.prompts {
        let task = &e.tasks[p.task];
        let target = &task.instances[p.target];
        for &d in &p.demonstrations {
            assert_ne!(
                task.instances[d].condition, target.condition,
                "a demonstration shares the target's condition"
            );
            assert_ne!(d, target.id);
        }
        let query = &p.text[p.segments["query"][0].clone()];
        assert!(
            !query.contains(&target.answer),
            "query {query:?} holds the answer"
        );
        assert!(p.text.ends_with(query), "the prompt ends with the query");
        if task.kind == "linear-regression" {
            let x = &target.context["query_x"];
            let answer_line = format!("x = {x}, y = {}", target.answer);
            let own = &p.text[p.segments["points"][0].clone()];
            assert!(
                !own.contains(&answer_line) && !own.contains(&format!("x = {x},")),
                "{own}"
            );
        }
    }
}

#[test]
fn a_user_defined_task_renders_with_its_segments_and_hypotheses() {
    let e = build(CUSTOM).unwrap_or_else(|err| panic!("{err}"));
    let task = &e.tasks[0];
    assert_eq!(task.conditions, ["europe", "asia"]);
    assert_eq!(e.prompts.len(), 8);
    let k_shot = &e.prompts[4];
    assert_eq!(k_shot.text.lines().count(), 3);
    assert!(k_shot.text.ends_with("France:"));
    // The matrix is reordered to the task's condition order (europe, asia).
    let instances: Vec<_> = task.instances.iter().collect();
    let h = task.hypotheses[0].matrix(&instances);
    assert_eq!((h[0], h[2], h[3 * 4 + 2]), (1.0, 0.2, 1.0));
    assert_eq!(task.probes.len(), 2, "one probe per parameter");
}

#[test]
fn malformed_toml_names_the_line() {
    let err = error_of("name = \"x\"\nseed = \n");
    assert!(err.contains("test.toml") && err.contains("line 2"), "{err}");
}

#[test]
fn an_unknown_key_is_an_error_that_names_it_and_its_line() {
    let err = error_of("name = \"x\"\n\n[[tasks]]\nkind = \"linear-regression\"\nslopes = [1, 2]\nintercepts = [0]\nslope = 3\n");
    assert!(
        err.contains("unknown field `slope`") && err.contains("line 7"),
        "{err}"
    );
    let err = error_of("name = \"x\"\ncolour = 1\n[[tasks]]\nkind = \"linear-regression\"\nslopes = [1, 2]\nintercepts = [0]\n");
    assert!(err.contains("`colour`") && err.contains("line 2"), "{err}");
}

#[test]
fn a_hypothesis_matrix_of_the_wrong_size_or_not_symmetric_is_refused() {
    let wrong_size = CUSTOM.replace(
        "matrix = [[1.0, 0.2], [0.2, 1.0]]",
        "matrix = [[1.0, 0.2, 0.0], [0.2, 1.0, 0.0]]",
    );
    let err = error_of(&wrong_size);
    assert!(
        err.contains("must be 2 × 2") && err.contains("tasks[0].hypotheses"),
        "{err}"
    );
    let asymmetric = CUSTOM.replace(
        "matrix = [[1.0, 0.2], [0.2, 1.0]]",
        "matrix = [[1.0, 0.2], [0.5, 1.0]]",
    );
    assert!(error_of(&asymmetric).contains("not symmetric"));
}

#[test]
fn a_condition_with_fewer_than_two_instances_is_refused() {
    let err = error_of("name = \"x\"\n[[tasks]]\nkind = \"linear-regression\"\nslopes = [1, 2]\nintercepts = [0]\ninstances_per_condition = 1\n");
    assert!(
        err.contains("instances_per_condition")
            && err.contains("at least 2")
            && err.contains("line 6"),
        "{err}"
    );
    let one_hanoi = CUSTOM.replace(
        "condition = \"asia\"\nanswer = \"Hanoi\"",
        "condition = \"oceania\"\nanswer = \"Hanoi\"",
    );
    let err = error_of(&one_hanoi);
    assert!(
        err.contains("has 1 instance; each needs at least 2"),
        "{err}"
    );
}

#[test]
fn a_segment_the_template_never_produces_is_refused() {
    let err = error_of("name = \"x\"\n[capture]\npooling = \"max:story\"\n[[tasks]]\nkind = \"linear-regression\"\nslopes = [1, 2]\nintercepts = [0]\n");
    assert!(
        err.contains("`story`") && err.contains("never produces") && err.contains("line 3"),
        "{err}"
    );
    let custom = CUSTOM.replace(
        "name = \"capitals\"\nshots",
        "name = \"capitals\"\nrelevant_segment = \"fact\"\ndistractor_segment = \"query\"\nshots",
    );
    assert!(error_of(&custom).contains("`fact`"));
}

#[test]
fn more_demonstrations_than_available_is_refused() {
    let err = error_of("name = \"x\"\n[[tasks]]\nkind = \"linear-regression\"\nslopes = [1, 2]\nintercepts = [0]\nshots = 5\n");
    assert!(
        err.contains("asks for 5 demonstrations") && err.contains("only 4"),
        "{err}"
    );
}

#[test]
fn layers_out_of_range_are_refused_once_the_model_is_known() {
    let e = build("name = \"x\"\n[capture]\nlayers = [0, 40]\n[[tasks]]\nkind = \"linear-regression\"\nslopes = [1, 2]\nintercepts = [0]\n")
        .expect("valid until the model is known");
    let err = e.layers(30).expect_err("layer 40 of 30").to_string();
    assert!(err.contains("layer 40") && err.contains("0 to 29"), "{err}");
    assert_eq!(e.layers(41).expect("fits"), vec![0, 40]);
}

#[test]
fn the_paper_preset_is_both_tasks_and_unknown_presets_are_named() {
    assert_eq!(
        paper()
            .tasks
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["linear-regression", "reading-comprehension"]
    );
    let err = Experiment::preset("papr")
        .expect_err("no such preset")
        .to_string();
    assert!(err.contains("`papr`") && err.contains("paper"), "{err}");
}

/// scripts/bench/paper-one-draw.toml times what the preset's extra draws
/// cost (README, Performance): it must be the preset in all but its name
/// and its single draw.
#[test]
fn the_one_draw_bench_file_is_the_paper_preset_but_for_its_draws() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/bench/paper-one-draw.toml"
    ))
    .expect("read the bench file");
    let one = ExperimentFile::parse(&text, "paper-one-draw.toml").unwrap_or_else(|e| panic!("{e}"));
    let mut preset = ExperimentFile::preset("paper").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(preset.robustness.draws, 3);
    preset.name = one.name.clone();
    preset.robustness.draws = 1;
    assert_eq!(one, preset);
}

#[test]
fn answer_batches_follow_the_capture_order_and_shards_own_whole_batches() {
    use engine::study::runner::Shard;
    // The paper preset with fixed demonstrations: a k-shot prompt shares its
    // instruction and demonstrations with the other k-shot prompts of its
    // task and condition, which are captured one after the other.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/bench/paper-fixed.toml"
    ))
    .expect("read the preset");
    let text = text.replace(
        "seed = 20231001",
        "seed = 20231001\n[capture]\nanswer_batch = 7",
    );
    let experiment = build(&text).unwrap_or_else(|e| panic!("{e}"));
    let n = experiment.prompts.len();
    let batches = engine::study::answer_batches(&experiment);
    // Runs of 7 prompts of one task; each task's last run holds the rest.
    let task_of = |b: &Vec<usize>| experiment.prompts[b[0]].task;
    for (i, batch) in batches.iter().enumerate() {
        assert!(batch
            .iter()
            .all(|&p| experiment.prompts[p].task == task_of(batch)));
        let last_of_task = batches
            .get(i + 1)
            .is_none_or(|next| task_of(next) != task_of(batch));
        if !last_of_task {
            assert_eq!(batch.len(), 7);
        }
    }
    for (t, task) in experiment.tasks.iter().enumerate() {
        let count = experiment.prompts.iter().filter(|p| p.task == t).count();
        let last = batches
            .iter()
            .rev()
            .find(|b| task_of(b) == t)
            .expect(&task.name);
        assert_eq!(last.len(), (count - 1) % 7 + 1, "{}", task.name);
    }
    let order: Vec<usize> = batches.iter().flatten().copied().collect();
    let all: Vec<usize> = (0..n).collect();
    assert_eq!(order, engine::study::capture_order(&experiment, &all));
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, all, "every prompt once");
    // Prompts that share a prefix text are consecutive.
    let prefix = |p: usize| {
        let prompt = &experiment.prompts[p];
        prompt
            .segments
            .get("demonstrations")
            .filter(|_| prompt.shots > 0)
            .map(|r| prompt.text[..r[0].end].to_string())
    };
    let mut seen = std::collections::HashSet::new();
    let mut last = None;
    for &p in &order {
        if let Some(text) = prefix(p) {
            if last.as_ref() != Some(&text) {
                assert!(seen.insert(text.clone()), "a prefix group is split");
            }
            last = Some(text);
        } else {
            last = None;
        }
    }
    // The batches depend on the experiment only: the same again.
    assert_eq!(engine::study::answer_batches(&experiment), batches);
    // Three shards own whole batches, round-robin, every prompt once.
    let mut owned = Vec::new();
    for index in 1..=3 {
        let shard = Shard { index, count: 3 };
        for (b, batch) in batches.iter().enumerate() {
            if shard.owns(b) {
                owned.extend(batch.iter().copied());
            }
        }
    }
    owned.sort_unstable();
    assert_eq!(owned, all);
}

#[test]
fn an_answer_batch_out_of_range_is_refused() {
    for bad in ["0", "65"] {
        let message = error_of(&CUSTOM.replace(
            "name = \"capitals\"\n\n[[tasks]]",
            &format!("name = \"capitals\"\n[capture]\nanswer_batch = {bad}\n\n[[tasks]]"),
        ));
        assert!(message.contains("capture.answer_batch"), "{message}");
        assert!(message.contains("between 1"), "{message}");
    }
}

/// A task of `n` instances per condition (three conditions), with
/// `[robustness]` as given.
fn with_robustness(demonstrations: &str, shots: usize, robustness: &str) -> String {
    format!(
        "name = \"x\"\n[robustness]\n{robustness}\n[[tasks]]\nkind = \"linear-regression\"\nslopes = [1, 2, 3]\nintercepts = [0]\nshots = {shots}\ninstances_per_condition = 2\ndemonstrations = \"{demonstrations}\"\n"
    )
}

#[test]
fn draws_are_seeded_distinct_and_never_show_the_target_condition() {
    for demonstrations in ["per-instance", "fixed"] {
        let text = with_robustness(demonstrations, 2, "draws = 4\norders = 2");
        let e = build(&text).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(
            e.prompts,
            build(&text).expect("again").prompts,
            "deterministic"
        );
        let task = &e.tasks[0];
        let n = task.instances.len();
        assert_eq!(e.prompts.len(), n * (1 + 4 * 2));
        for target in &task.instances {
            let shown: Vec<&engine::experiment::Prompt> = e
                .prompts
                .iter()
                .filter(|p| p.target == target.id && p.shots > 0)
                .collect();
            assert_eq!(
                shown.iter().map(|p| p.draw).collect::<Vec<_>>(),
                (0..8).collect::<Vec<_>>()
            );
            let mut sets = Vec::new();
            for pair in shown.chunks(2) {
                // The two orders of a draw: one set, two different orders.
                let (a, b) = (&pair[0].demonstrations, &pair[1].demonstrations);
                assert_ne!(a, b, "{demonstrations}: orders of a draw differ");
                let (mut sa, mut sb) = (a.clone(), b.clone());
                sa.sort_unstable();
                sb.sort_unstable();
                assert_eq!(sa, sb, "{demonstrations}: one set per draw");
                for &d in a {
                    assert_ne!(
                        task.instances[d].condition, target.condition,
                        "{demonstrations}: target {} is shown its own condition",
                        target.id
                    );
                }
                sets.push(sa);
            }
            let mut distinct = sets.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(
                distinct.len(),
                sets.len(),
                "{demonstrations}: draws repeat: {sets:?}"
            );
        }
    }
}

#[test]
fn one_draw_is_the_experiment_without_a_robustness_section() {
    let plain = build(&with_robustness("per-instance", 2, "")).expect("plain");
    let one = build(&with_robustness("per-instance", 2, "draws = 1\norders = 1")).expect("one");
    assert_eq!(plain.prompts, one.prompts);
    assert_eq!(
        serde_json::to_string(&plain.file).expect("json"),
        serde_json::to_string(&one.file).expect("json"),
        "the resolved experiment leaves one draw out"
    );
    // The first draw of several is the single draw itself.
    let three = build(&with_robustness("per-instance", 2, "draws = 3")).expect("three");
    let first: Vec<_> = three
        .prompts
        .iter()
        .filter(|p| p.draw == 0)
        .cloned()
        .collect();
    assert_eq!(first, plain.prompts);
}

#[test]
fn impossible_draws_are_refused_naming_the_key_and_its_line() {
    let cases = [
        ("draws = 0", "`robustness.draws` is 0", "line 3"),
        ("orders = 0", "`robustness.orders` is 0", "line 3"),
        // Two demonstrations can be ordered in two ways.
        ("orders = 3", "only 2 ways", "line 3"),
        // A target has 4 instances of other conditions: C(4, 2) = 6 sets.
        ("draws = 7", "only 6 distinct sets", "line 3"),
    ];
    for (setting, expected, line) in cases {
        let err = error_of(&with_robustness("per-instance", 2, setting));
        assert!(
            err.contains(expected) && err.contains(line),
            "{setting}: {err}"
        );
    }
    assert!(build(&with_robustness("per-instance", 2, "draws = 6\norders = 2")).is_ok());
    let err = error_of(&with_robustness("fixed", 2, "draws = 7"));
    assert!(err.contains("only 6 distinct sets"), "{err}");
}
