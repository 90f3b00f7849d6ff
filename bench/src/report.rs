//! Turns samples into the table: medians over rounds, gateway ratios against nginx and
//! HAProxy, whether each target ratio was met, and every round's value to show drift.

use std::fmt::Write as _;

use crate::matrix::TargetKind;

/// The bar a gateway/proxy ratio has to clear.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    None,
    /// gateway / nginx and gateway / HAProxy both at least this.
    AtLeastBoth(f64),
    /// gateway / nginx and gateway / HAProxy both at most this.
    AtMostBoth(f64),
    AtMostNginx(f64),
    AtMostHaproxy(f64),
}

impl Goal {
    fn describe(self) -> String {
        match self {
            Goal::None => String::new(),
            Goal::AtLeastBoth(ratio) => format!(">= {ratio} x both"),
            Goal::AtMostBoth(ratio) => format!("<= {ratio} x both"),
            Goal::AtMostNginx(ratio) => format!("<= {ratio} x nginx"),
            Goal::AtMostHaproxy(ratio) => format!("<= {ratio} x HAProxy"),
        }
    }

    /// `None` when a ratio it needs is missing.
    fn met(self, vs_nginx: Option<f64>, vs_haproxy: Option<f64>) -> Option<bool> {
        match self {
            Goal::None => None,
            Goal::AtLeastBoth(bar) => Some(vs_nginx? >= bar && vs_haproxy? >= bar),
            Goal::AtMostBoth(bar) => Some(vs_nginx? <= bar && vs_haproxy? <= bar),
            Goal::AtMostNginx(bar) => Some(vs_nginx? <= bar),
            Goal::AtMostHaproxy(bar) => Some(vs_haproxy? <= bar),
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    pub goal: Goal,
}

impl Metric {
    pub fn new(name: String, goal: Goal) -> Self {
        Self { name, goal }
    }
}

/// One measured value.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub round: usize,
    pub target: TargetKind,
    pub metric: String,
    pub value: f64,
}

/// Metric name under which failed operations are counted.
const ERRORS: &str = "errors";

impl Sample {
    pub fn new(round: usize, target: TargetKind, metric: &str, value: f64) -> Self {
        Self {
            round,
            target,
            metric: metric.to_owned(),
            value,
        }
    }

    pub fn errors(round: usize, target: TargetKind, count: u64) -> Self {
        Self::new(round, target, ERRORS, count as f64)
    }
}

fn values<'a>(
    samples: &'a [Sample],
    metric: &'a str,
    target: TargetKind,
) -> impl Iterator<Item = &'a Sample> {
    samples
        .iter()
        .filter(move |sample| sample.metric == metric && sample.target == target)
}

/// Median over rounds.
pub fn median(samples: &[Sample], metric: &str, target: TargetKind) -> Option<f64> {
    let mut found: Vec<f64> = values(samples, metric, target)
        .map(|sample| sample.value)
        .collect();
    if found.is_empty() {
        return None;
    }
    found.sort_by(f64::total_cmp);
    let middle = found.len() / 2;
    Some(if found.len() % 2 == 1 {
        found[middle]
    } else {
        (found[middle - 1] + found[middle]) / 2.0
    })
}

fn number(value: Option<f64>) -> String {
    match value {
        None => "–".to_owned(),
        Some(value) if value.abs() >= 100.0 => format!("{value:.0}"),
        Some(value) if value.abs() >= 10.0 => format!("{value:.1}"),
        Some(value) => format!("{value:.2}"),
    }
}

/// The summary table and the per-round table, as Markdown.
pub fn render(
    metrics: &[Metric],
    targets: &[TargetKind],
    rounds: usize,
    samples: &[Sample],
) -> String {
    let mut out = String::new();
    let header: Vec<&str> = targets.iter().map(|target| target.name()).collect();
    // The floor's own ratio shows how low any proxy could go on this machine.
    let with_floor = targets.contains(&TargetKind::Floor);
    let floor_header = if with_floor { " floor / nginx |" } else { "" };
    let _ = writeln!(
        out,
        "| metric (median of {rounds} rounds) | {} | gateway / nginx | gateway / HAProxy |{floor_header} target | met |",
        header.join(" | ")
    );
    let ratio_columns = 2 + usize::from(with_floor);
    let _ = writeln!(
        out,
        "|---|{}---|---|",
        "---:|".repeat(targets.len() + ratio_columns)
    );
    for metric in metrics {
        let medians: Vec<Option<f64>> = targets
            .iter()
            .map(|&target| median(samples, &metric.name, target))
            .collect();
        let ratio = |of: TargetKind, to: TargetKind| {
            Some(median(samples, &metric.name, of)? / median(samples, &metric.name, to)?)
        };
        let vs_nginx = ratio(TargetKind::Gateway, TargetKind::Nginx);
        let vs_haproxy = ratio(TargetKind::Gateway, TargetKind::Haproxy);
        let floor_cell = if with_floor {
            format!(" {} |", number(ratio(TargetKind::Floor, TargetKind::Nginx)))
        } else {
            String::new()
        };
        let met = match metric.goal.met(vs_nginx, vs_haproxy) {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let cells: Vec<String> = medians.into_iter().map(number).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |{floor_cell} {} | {met} |",
            metric.name,
            cells.join(" | "),
            number(vs_nginx),
            number(vs_haproxy),
            metric.goal.describe()
        );
    }
    let errors: Vec<String> = targets
        .iter()
        .map(|&target| {
            let total: u64 = values(samples, ERRORS, target)
                .map(|sample| sample.value as u64)
                .sum();
            format!("{} {total}", target.name())
        })
        .collect();
    let _ = writeln!(
        out,
        "\nFailed operations (timeouts, refusals, resets): {}.",
        errors.join(", ")
    );

    let _ = writeln!(
        out,
        "\nEvery round, to show drift (rounds ran targets interleaved):\n"
    );
    let round_header: Vec<String> = (1..=rounds).map(|round| format!("round {round}")).collect();
    let _ = writeln!(out, "| metric | target | {} |", round_header.join(" | "));
    let _ = writeln!(out, "|---|---|{}", "---:|".repeat(rounds));
    for metric in metrics {
        for &target in targets {
            let by_round: Vec<String> = (1..=rounds)
                .map(|round| {
                    number(
                        values(samples, &metric.name, target)
                            .find(|sample| sample.round == round)
                            .map(|sample| sample.value),
                    )
                })
                .collect();
            if by_round.iter().any(|cell| cell != "–") {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} |",
                    metric.name,
                    target.name(),
                    by_round.join(" | ")
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(round: usize, target: TargetKind, value: f64) -> Sample {
        Sample::new(round, target, "m", value)
    }

    /// The table of one metric `m` over one round: the targets in the order given, each with
    /// its value.
    fn one_round_table(goal: Goal, values: &[(TargetKind, f64)]) -> String {
        let metrics = vec![Metric::new("m".into(), goal)];
        let samples: Vec<Sample> = values
            .iter()
            .map(|&(target, value)| sample(1, target, value))
            .collect();
        let targets: Vec<TargetKind> = values.iter().map(|&(target, _)| target).collect();
        render(&metrics, &targets, 1, &samples)
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let samples = vec![
            sample(1, TargetKind::Nginx, 3.0),
            sample(2, TargetKind::Nginx, 1.0),
            sample(3, TargetKind::Nginx, 2.0),
            sample(1, TargetKind::Haproxy, 1.0),
            sample(2, TargetKind::Haproxy, 4.0),
        ];
        assert_eq!(median(&samples, "m", TargetKind::Nginx), Some(2.0));
        assert_eq!(median(&samples, "m", TargetKind::Haproxy), Some(2.5));
        assert_eq!(median(&samples, "m", TargetKind::Gateway), None);
    }

    #[test]
    fn goals_compare_the_right_ratios() {
        assert_eq!(
            Goal::AtLeastBoth(1.0).met(Some(1.2), Some(0.9)),
            Some(false)
        );
        assert_eq!(Goal::AtMostNginx(0.8).met(Some(0.7), None), Some(true));
        assert_eq!(Goal::AtMostHaproxy(1.0).met(Some(0.5), None), None);
        assert_eq!(Goal::None.met(Some(1.0), Some(1.0)), None);
    }

    #[test]
    fn table_shows_ratios_and_whether_the_goal_was_met() {
        let table = one_round_table(
            Goal::AtLeastBoth(1.0),
            &[
                (TargetKind::Nginx, 100.0),
                (TargetKind::Haproxy, 50.0),
                (TargetKind::Gateway, 80.0),
            ],
        );
        assert!(
            table.contains("| m | 100 | 50.0 | 80.0 | 0.80 | 1.60 | >= 1 x both | **no** |"),
            "{table}"
        );
    }

    #[test]
    fn with_the_floor_the_table_shows_its_ratio_to_nginx() {
        let table = one_round_table(
            Goal::AtMostNginx(0.8),
            &[
                (TargetKind::Floor, 9.0),
                (TargetKind::Nginx, 10.0),
                (TargetKind::Haproxy, 12.0),
                (TargetKind::Gateway, 10.0),
            ],
        );
        assert!(
            table.contains("| gateway / HAProxy | floor / nginx | target | met |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---|"),
            "{table}"
        );
        assert!(
            table.contains(
                "| m | 9.00 | 10.0 | 12.0 | 10.0 | 1.00 | 0.83 | 0.90 | <= 0.8 x nginx | **no** |"
            ),
            "{table}"
        );
    }
}
