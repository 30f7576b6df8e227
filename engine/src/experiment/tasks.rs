//! Tasks: conditions, target instances, hypotheses and probe targets, built
//! from the experiment file (the two built-in generators of the study, or a
//! user-defined list of instances).

use std::collections::BTreeMap;

use serde_json::json;

use super::config::{
    CustomFile, Demonstrations, LinearRegressionFile, ParamValue, ReadingComprehensionFile,
};
use crate::analysis::resample::named_rng;

/// The built-in linear-regression template: points `x = 3, y = 11`, one per
/// line, then the query `x = 7, y =`.
pub const LINEAR_REGRESSION_TEMPLATE: &str = r#"{% filter segment("instruction") %}Each example lists points on one line. Give y for the last x.

{% endfilter %}{% if demonstrations %}{% filter segment("demonstrations") %}{% for d in demonstrations %}{% for p in d.points %}x = {{ p.x }}, y = {{ p.y }}
{% endfor %}x = {{ d.query_x }}, y = {{ d.answer }}

{% endfor %}{% endfilter %}{% endif %}{% filter segment("points") %}{% for p in target.points %}x = {{ p.x }}, y = {{ p.y }}
{% endfor %}{% endfilter %}{% filter segment("query") %}x = {{ target.query_x }}, y ={% endfilter %}"#;

/// The built-in reading-comprehension template: a two-sentence story whose
/// sentences are the `relevant` and `distractor` segments, then the question.
pub const READING_COMPREHENSION_TEMPLATE: &str = r#"{% filter segment("instruction") %}Read the story and answer the question.

{% endfilter %}{% if demonstrations %}{% filter segment("demonstrations") %}{% for d in demonstrations %}Story: {{ d.first }} {{ d.second }}
Question: What is {{ d.name }} doing?
Answer: {{ d.answer }}

{% endfor %}{% endfilter %}{% endif %}Story: {% if target.relevant_first %}{% filter segment("relevant") %}{{ target.relevant }}{% endfilter %} {% filter segment("distractor") %}{{ target.distractor }}{% endfilter %}{% else %}{% filter segment("distractor") %}{{ target.distractor }}{% endfilter %} {% filter segment("relevant") %}{{ target.relevant }}{% endfilter %}{% endif %}
{% filter segment("query") %}Question: What is {{ target.name }} doing?
Answer:{% endfilter %}"#;

/// How a generated answer is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scoring {
    /// The first number in the answer; error = |ŷ − y|.
    Number,
    /// Correct when the answer contains one of the instance's keywords and
    /// none of its forbidden words (case-insensitive).
    Keywords,
}

/// One target instance of a task.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Instance {
    /// Index within its task.
    pub id: usize,
    /// Index into the task's conditions.
    pub condition: usize,
    pub params: BTreeMap<String, ParamValue>,
    /// What the template sees as `target` (and, with the answer, as an
    /// element of `demonstrations`).
    pub context: serde_json::Value,
    pub answer: String,
    pub keywords: Vec<String>,
    pub forbidden: Vec<String>,
}

impl Instance {
    pub fn numeric_answer(&self) -> Option<f64> {
        self.answer.trim().parse().ok()
    }
}

/// A hypothesis: which prompts should be represented alike.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hypothesis {
    pub name: String,
    pub kind: HypothesisKind,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HypothesisKind {
    /// 1 when the parameter is equal, 0 otherwise.
    Same(String),
    /// −|p_i − p_j| of a numeric parameter.
    Graded(String),
    /// Given per pair of conditions (rows in the task's condition order).
    Matrix(Vec<Vec<f64>>),
}

impl Hypothesis {
    /// The `n × n` hypothesis matrix over the given instances, row-major.
    pub fn matrix(&self, instances: &[&Instance]) -> Vec<f64> {
        let n = instances.len();
        let mut out = vec![0.0; n * n];
        for (i, a) in instances.iter().enumerate() {
            for (j, b) in instances.iter().enumerate() {
                out[i * n + j] = match &self.kind {
                    HypothesisKind::Same(p) => {
                        f64::from(u8::from(a.params.get(p) == b.params.get(p)))
                    }
                    HypothesisKind::Graded(p) => match (a.params.get(p), b.params.get(p)) {
                        (Some(ParamValue::Number(x)), Some(ParamValue::Number(y))) => {
                            -(x - y).abs()
                        }
                        _ => f64::NAN,
                    },
                    HypothesisKind::Matrix(m) => m[a.condition][b.condition],
                };
            }
        }
        out
    }
}

/// A parameter a linear probe decodes from the embeddings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProbeTarget {
    pub param: String,
    /// Numbers get a ridge probe (R²), text a logistic probe (accuracy).
    pub numeric: bool,
}

/// A task ready to build prompts from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Task {
    pub name: String,
    pub kind: String,
    pub shots: usize,
    pub demonstrations: Demonstrations,
    pub template: String,
    pub scoring: Scoring,
    pub conditions: Vec<String>,
    pub instances: Vec<Instance>,
    pub hypotheses: Vec<Hypothesis>,
    pub probes: Vec<ProbeTarget>,
    /// Segment labels of the relevant and distractor spans (attention ratio).
    pub attention_segments: Option<(String, String)>,
}

pub fn linear_regression(f: &LinearRegressionFile, seed: u64) -> Task {
    let mut rng = named_rng(seed, &format!("instances/{}", f.name));
    let mut conditions = Vec::new();
    let mut instances = Vec::new();
    let xs: Vec<i64> = (f.x_min..=f.x_max).collect();
    for &a in &f.slopes {
        for &b in &f.intercepts {
            let condition = conditions.len();
            conditions.push(format!("y = {a}x + {b}"));
            for _ in 0..f.instances_per_condition {
                let mut pool = xs.clone();
                rng.shuffle(&mut pool);
                let mut shown: Vec<i64> = pool[..f.points].to_vec();
                shown.sort_unstable();
                let query = pool[f.points];
                let points: Vec<_> = shown
                    .iter()
                    .map(|&x| json!({"x": x, "y": a * x + b}))
                    .collect();
                let answer = (a * query + b).to_string();
                instances.push(Instance {
                    id: instances.len(),
                    condition,
                    params: BTreeMap::from([
                        ("slope".to_string(), ParamValue::Number(a as f64)),
                        ("intercept".to_string(), ParamValue::Number(b as f64)),
                        (
                            "condition".to_string(),
                            ParamValue::Text(format!("{a},{b}")),
                        ),
                    ]),
                    context: json!({"points": points, "query_x": query, "answer": answer}),
                    answer,
                    keywords: Vec::new(),
                    forbidden: Vec::new(),
                });
            }
        }
    }
    let same = |name: &str, p: &str| Hypothesis {
        name: name.into(),
        kind: HypothesisKind::Same(p.into()),
    };
    let graded = |name: &str, p: &str| Hypothesis {
        name: name.into(),
        kind: HypothesisKind::Graded(p.into()),
    };
    Task {
        name: f.name.clone(),
        kind: "linear-regression".into(),
        shots: f.shots,
        demonstrations: f.demonstrations,
        template: f
            .template
            .clone()
            .unwrap_or_else(|| LINEAR_REGRESSION_TEMPLATE.to_string()),
        scoring: Scoring::Number,
        conditions,
        instances,
        hypotheses: vec![
            same("same slope", "slope"),
            same("same intercept", "intercept"),
            graded("slope distance", "slope"),
            graded("intercept distance", "intercept"),
            same("same condition", "condition"),
        ],
        probes: vec![
            ProbeTarget {
                param: "slope".into(),
                numeric: true,
            },
            ProbeTarget {
                param: "intercept".into(),
                numeric: true,
            },
        ],
        attention_segments: None,
    }
}

pub fn reading_comprehension(f: &ReadingComprehensionFile, seed: u64) -> Task {
    let mut rng = named_rng(seed, &format!("instances/{}", f.name));
    let mut instances = Vec::new();
    let conditions: Vec<String> = f.activities.iter().map(|a| a.phrase.clone()).collect();
    for (condition, activity) in f.activities.iter().enumerate() {
        for j in 0..f.instances_per_condition {
            let asked = rng.index(f.names.len());
            let other = (asked + 1 + rng.index(f.names.len() - 1)) % f.names.len();
            let distractor_index =
                (condition + 1 + rng.index(f.activities.len() - 1)) % f.activities.len();
            let distractor = &f.activities[distractor_index];
            let (name, other_name) = (&f.names[asked], &f.names[other]);
            let relevant = format!("{name} is {}.", activity.phrase);
            let distracting = format!("{other_name} is {}.", distractor.phrase);
            // Alternate the order within each condition: balanced when the
            // number of instances per condition is even.
            let relevant_first = j % 2 == 0;
            let (first, second) = if relevant_first {
                (&relevant, &distracting)
            } else {
                (&distracting, &relevant)
            };
            instances.push(Instance {
                id: instances.len(),
                condition,
                params: BTreeMap::from([
                    ("activity".to_string(), ParamValue::Text(activity.phrase.clone())),
                    ("person".to_string(), ParamValue::Text(name.clone())),
                ]),
                context: json!({
                    "name": name, "other": other_name, "relevant": relevant, "distractor": distracting,
                    "relevant_first": relevant_first, "first": first, "second": second,
                    "answer": activity.phrase,
                }),
                answer: activity.phrase.clone(),
                keywords: activity.keywords.clone(),
                forbidden: distractor.keywords.clone(),
            });
        }
    }
    Task {
        name: f.name.clone(),
        kind: "reading-comprehension".into(),
        shots: f.shots,
        demonstrations: f.demonstrations,
        template: f
            .template
            .clone()
            .unwrap_or_else(|| READING_COMPREHENSION_TEMPLATE.to_string()),
        scoring: Scoring::Keywords,
        conditions,
        instances,
        hypotheses: vec![
            Hypothesis {
                name: "same activity".into(),
                kind: HypothesisKind::Same("activity".into()),
            },
            Hypothesis {
                name: "same person".into(),
                kind: HypothesisKind::Same("person".into()),
            },
        ],
        probes: vec![
            ProbeTarget {
                param: "activity".into(),
                numeric: false,
            },
            ProbeTarget {
                param: "person".into(),
                numeric: false,
            },
        ],
        attention_segments: Some(("relevant".into(), "distractor".into())),
    }
}

/// A user-defined task. Its hypotheses were validated by the caller.
pub fn custom(f: &CustomFile, hypotheses: Vec<Hypothesis>) -> Task {
    let mut conditions: Vec<String> = Vec::new();
    let mut instances = Vec::new();
    for inst in &f.instances {
        let condition = conditions
            .iter()
            .position(|c| c == &inst.condition)
            .unwrap_or_else(|| {
                conditions.push(inst.condition.clone());
                conditions.len() - 1
            });
        let mut context = serde_json::to_value(&inst.vars).unwrap_or_else(|_| json!({}));
        if let Some(map) = context.as_object_mut() {
            map.insert("answer".into(), json!(inst.answer));
            map.insert("condition".into(), json!(inst.condition));
            for (k, v) in &inst.params {
                map.entry(k.clone())
                    .or_insert_with(|| serde_json::to_value(v).unwrap_or_default());
            }
        }
        instances.push(Instance {
            id: instances.len(),
            condition,
            params: inst.params.clone(),
            context,
            answer: inst.answer.clone(),
            keywords: vec![inst.answer.clone()],
            forbidden: Vec::new(),
        });
    }
    let mut probes: Vec<ProbeTarget> = Vec::new();
    if let Some(first) = f.instances.first() {
        for (param, value) in &first.params {
            probes.push(ProbeTarget {
                param: param.clone(),
                numeric: matches!(value, ParamValue::Number(_)),
            });
        }
    }
    Task {
        name: f.name.clone(),
        kind: "custom".into(),
        shots: f.shots,
        demonstrations: f.demonstrations,
        template: f.template.clone(),
        scoring: if f.scoring == "number" {
            Scoring::Number
        } else {
            Scoring::Keywords
        },
        conditions,
        instances,
        hypotheses,
        probes,
        attention_segments: f.relevant_segment.clone().zip(f.distractor_segment.clone()),
    }
}
