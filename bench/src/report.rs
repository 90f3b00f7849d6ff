//! Turns samples into the table: medians over rounds, gateway ratios against nginx and
//! HAProxy, whether each target ratio was met (by the medians and round by round), the
//! paired ratios of every round, and every round's value to show drift.

use std::collections::BTreeMap;
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
    /// gateway / nginx at least this.
    AtLeastNginx(f64),
    AtMostNginx(f64),
    AtMostHaproxy(f64),
}

impl Goal {
    fn describe(self) -> String {
        match self {
            Goal::None => String::new(),
            Goal::AtLeastBoth(ratio) => format!(">= {ratio} x both"),
            Goal::AtMostBoth(ratio) => format!("<= {ratio} x both"),
            Goal::AtLeastNginx(ratio) => format!(">= {ratio} x nginx"),
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
            Goal::AtLeastNginx(bar) => Some(vs_nginx? >= bar),
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
/// Prefix of the metric under which failed operations of one cause are counted.
const FAILURE_CAUSE: &str = "errors: ";

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

    /// `count` of the round's failed operations had `cause`.
    pub fn failures(round: usize, target: TargetKind, cause: &str, count: u64) -> Self {
        Self::new(
            round,
            target,
            &format!("{FAILURE_CAUSE}{cause}"),
            count as f64,
        )
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

/// The value measured in one round.
fn in_round(samples: &[Sample], metric: &str, target: TargetKind, round: usize) -> Option<f64> {
    values(samples, metric, target)
        .find(|sample| sample.round == round)
        .map(|sample| sample.value)
}

/// A ratio the report shows: one target's value over another's.
#[derive(Debug, Clone, Copy)]
struct Ratio {
    of: TargetKind,
    to: TargetKind,
    label: &'static str,
}

const GATEWAY_VS_NGINX: Ratio = Ratio {
    of: TargetKind::Gateway,
    to: TargetKind::Nginx,
    label: "gateway / nginx",
};
const GATEWAY_VS_HAPROXY: Ratio = Ratio {
    of: TargetKind::Gateway,
    to: TargetKind::Haproxy,
    label: "gateway / HAProxy",
};
/// The floor's own ratio shows how low any proxy could go on this machine.
const FLOOR_VS_NGINX: Ratio = Ratio {
    of: TargetKind::Floor,
    to: TargetKind::Nginx,
    label: "floor / nginx",
};

impl Ratio {
    /// The ratio of the medians over rounds.
    fn of_medians(self, samples: &[Sample], metric: &str) -> Option<f64> {
        quotient(
            median(samples, metric, self.of)?,
            median(samples, metric, self.to)?,
        )
    }

    /// The ratio within each round (rounds `1..=rounds`), of values measured minutes apart;
    /// `None` for a round that lacks either value.
    fn paired(self, samples: &[Sample], metric: &str, rounds: usize) -> Vec<Option<f64>> {
        (1..=rounds)
            .map(|round| {
                quotient(
                    in_round(samples, metric, self.of, round)?,
                    in_round(samples, metric, self.to, round)?,
                )
            })
            .collect()
    }
}

/// `of / to`, or `None` when `to` is zero (a count such as listen queue overflows often is).
fn quotient(of: f64, to: f64) -> Option<f64> {
    (to != 0.0).then(|| of / to)
}

/// In how many rounds the goal was met on that round's own ratios, and in how many it could
/// be judged (rounds lacking a value the goal needs are not counted).
fn rounds_met(goal: Goal, samples: &[Sample], metric: &str, rounds: usize) -> (usize, usize) {
    let vs_nginx = GATEWAY_VS_NGINX.paired(samples, metric, rounds);
    let vs_haproxy = GATEWAY_VS_HAPROXY.paired(samples, metric, rounds);
    let judged: Vec<bool> = vs_nginx
        .into_iter()
        .zip(vs_haproxy)
        .filter_map(|(vs_nginx, vs_haproxy)| goal.met(vs_nginx, vs_haproxy))
        .collect();
    (judged.iter().filter(|&&met| met).count(), judged.len())
}

/// `yes` or `**no**` from the medians, then how many rounds met the goal on their own.
fn met_cell(metric: &Metric, samples: &[Sample], rounds: usize) -> String {
    let vs_nginx = GATEWAY_VS_NGINX.of_medians(samples, &metric.name);
    let vs_haproxy = GATEWAY_VS_HAPROXY.of_medians(samples, &metric.name);
    let Some(met) = metric.goal.met(vs_nginx, vs_haproxy) else {
        return String::new();
    };
    let verdict = if met { "yes" } else { "**no**" };
    let (met_rounds, judged) = rounds_met(metric.goal, samples, &metric.name, rounds);
    let noun = if judged == 1 { "round" } else { "rounds" };
    format!("{verdict}, {met_rounds} of {judged} {noun}")
}

fn number(value: Option<f64>) -> String {
    match value {
        None => "–".to_owned(),
        Some(value) if value.abs() >= 100.0 => format!("{value:.0}"),
        Some(value) if value.abs() >= 10.0 => format!("{value:.1}"),
        Some(value) => format!("{value:.2}"),
    }
}

/// The summary table, the paired ratios of every round and the per-round table, as Markdown.
pub fn render(
    metrics: &[Metric],
    targets: &[TargetKind],
    rounds: usize,
    samples: &[Sample],
) -> String {
    let mut out = String::new();
    let header: Vec<&str> = targets.iter().map(|target| target.name()).collect();
    let mut ratios = vec![GATEWAY_VS_NGINX, GATEWAY_VS_HAPROXY];
    if targets.contains(&TargetKind::Floor) {
        ratios.push(FLOOR_VS_NGINX);
    }
    let ratio_header: Vec<&str> = ratios.iter().map(|ratio| ratio.label).collect();
    let _ = writeln!(
        out,
        "| metric (median of {rounds} rounds) | {} | {} | target | met |",
        header.join(" | "),
        ratio_header.join(" | ")
    );
    let _ = writeln!(
        out,
        "|---|{}---|---|",
        "---:|".repeat(targets.len() + ratios.len())
    );
    for metric in metrics {
        let cells: Vec<String> = targets
            .iter()
            .map(|&target| number(median(samples, &metric.name, target)))
            .collect();
        let ratio_cells: Vec<String> = ratios
            .iter()
            .map(|ratio| number(ratio.of_medians(samples, &metric.name)))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            metric.name,
            cells.join(" | "),
            ratio_cells.join(" | "),
            metric.goal.describe(),
            met_cell(metric, samples, rounds)
        );
    }
    let errors: Vec<String> = targets
        .iter()
        .map(|&target| {
            let total: u64 = values(samples, ERRORS, target)
                .map(|sample| sample.value as u64)
                .sum();
            let mut causes: BTreeMap<&str, u64> = BTreeMap::new();
            for sample in samples.iter().filter(|sample| sample.target == target) {
                if let Some(cause) = sample.metric.strip_prefix(FAILURE_CAUSE) {
                    *causes.entry(cause).or_default() += sample.value as u64;
                }
            }
            let causes: Vec<String> = causes
                .iter()
                .map(|(cause, count)| format!("{count} {cause}"))
                .collect();
            if causes.is_empty() {
                format!("{} {total}", target.name())
            } else {
                format!("{} {total} ({})", target.name(), causes.join(", "))
            }
        })
        .collect();
    let _ = writeln!(
        out,
        "\nFailed operations (timeouts, refusals, resets): {}.",
        errors.join(", ")
    );

    let round_header: Vec<String> = (1..=rounds).map(|round| format!("round {round}")).collect();
    let _ = writeln!(
        out,
        "\nPaired ratios, round by round (each round's own values; spread is lowest–highest):\n"
    );
    let _ = writeln!(
        out,
        "| metric | ratio | {} | spread |",
        round_header.join(" | ")
    );
    let _ = writeln!(out, "|---|---|{}---:|", "---:|".repeat(rounds));
    for metric in metrics {
        for ratio in &ratios {
            let paired = ratio.paired(samples, &metric.name, rounds);
            let found = paired.iter().flatten().copied();
            let (Some(lowest), Some(highest)) =
                (found.clone().reduce(f64::min), found.reduce(f64::max))
            else {
                continue;
            };
            let cells: Vec<String> = paired.into_iter().map(number).collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {}–{} |",
                metric.name,
                ratio.label,
                cells.join(" | "),
                number(Some(lowest)),
                number(Some(highest))
            );
        }
    }

    let _ = writeln!(
        out,
        "\nEvery round, to show drift (rounds ran targets interleaved):\n"
    );
    let _ = writeln!(out, "| metric | target | {} |", round_header.join(" | "));
    let _ = writeln!(out, "|---|---|{}", "---:|".repeat(rounds));
    for metric in metrics {
        for &target in targets {
            let by_round: Vec<String> = (1..=rounds)
                .map(|round| number(in_round(samples, &metric.name, target, round)))
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

    /// The table of one metric `m`: the targets in the order given, each with its value in
    /// round 1, 2, … (`None` where that round lacks it).
    fn table(goal: Goal, by_target: &[(TargetKind, Vec<Option<f64>>)]) -> String {
        let metrics = vec![Metric::new("m".into(), goal)];
        let samples: Vec<Sample> = by_target
            .iter()
            .flat_map(|(target, values)| {
                (1..)
                    .zip(values)
                    .filter_map(|(round, value)| Some(sample(round, *target, (*value)?)))
            })
            .collect();
        let targets: Vec<TargetKind> = by_target.iter().map(|(target, _)| *target).collect();
        let rounds = by_target
            .iter()
            .map(|(_, values)| values.len())
            .max()
            .unwrap_or(0);
        render(&metrics, &targets, rounds, &samples)
    }

    #[track_caller]
    fn assert_shows(table: &str, text: &str) {
        assert!(table.contains(text), "{text:?} is not in:\n{table}");
    }

    /// The table of one metric `m` over one round.
    fn one_round_table(goal: Goal, values: &[(TargetKind, f64)]) -> String {
        let by_target: Vec<(TargetKind, Vec<Option<f64>>)> = values
            .iter()
            .map(|&(target, value)| (target, vec![Some(value)]))
            .collect();
        table(goal, &by_target)
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
        assert_shows(
            &table,
            "| m | 100 | 50.0 | 80.0 | 0.80 | 1.60 | >= 1 x both | **no**, 0 of 1 round |",
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
        assert_shows(
            &table,
            "| gateway / HAProxy | floor / nginx | target | met |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
        );
        assert_shows(
            &table,
            "| m | 9.00 | 10.0 | 12.0 | 10.0 | 1.00 | 0.83 | 0.90 | <= 0.8 x nginx | **no**, 0 of 1 round |",
        );
    }

    #[test]
    fn met_counts_the_rounds_whose_own_ratios_meet_the_goal() {
        // The medians give 85 / 80 and 85 / 70, both at least 1, yet only round 2 has the
        // gateway ahead of both proxies measured in the same round.
        let table = table(
            Goal::AtLeastBoth(1.0),
            &[
                (TargetKind::Nginx, vec![Some(100.0), Some(42.0), Some(80.0)]),
                (
                    TargetKind::Haproxy,
                    vec![Some(95.0), Some(45.0), Some(70.0)],
                ),
                (
                    TargetKind::Gateway,
                    vec![Some(90.0), Some(85.0), Some(75.0)],
                ),
            ],
        );
        assert_shows(
            &table,
            "| m | 80.0 | 70.0 | 85.0 | 1.06 | 1.21 | >= 1 x both | yes, 1 of 3 rounds |",
        );
        assert_shows(
            &table,
            "| m | gateway / nginx | 0.90 | 2.02 | 0.94 | 0.90–2.02 |\n",
        );
        assert_shows(
            &table,
            "| m | gateway / HAProxy | 0.95 | 1.89 | 1.07 | 0.95–1.89 |\n",
        );
    }

    #[test]
    fn a_ratio_to_zero_is_left_blank() {
        let table = one_round_table(
            Goal::None,
            &[
                (TargetKind::Nginx, 0.0),
                (TargetKind::Haproxy, 2.0),
                (TargetKind::Gateway, 1.0),
            ],
        );
        assert_shows(&table, "| m | 0.00 | 2.00 | 1.00 | – | 0.50 |  |  |");
        assert_shows(&table, "| m | gateway / HAProxy | 0.50 | 0.50–0.50 |\n");
        assert!(!table.contains("NaN") && !table.contains("inf"), "{table}");
    }

    #[test]
    fn a_round_without_a_gateway_value_is_not_counted() {
        let table = table(
            Goal::AtMostBoth(1.0),
            &[
                (
                    TargetKind::Nginx,
                    vec![Some(100.0), Some(100.0), Some(100.0)],
                ),
                (
                    TargetKind::Haproxy,
                    vec![Some(100.0), Some(100.0), Some(100.0)],
                ),
                (TargetKind::Gateway, vec![Some(90.0), None, Some(110.0)]),
            ],
        );
        assert_shows(&table, "| <= 1 x both | yes, 1 of 2 rounds |");
        assert_shows(
            &table,
            "| m | gateway / nginx | 0.90 | – | 1.10 | 0.90–1.10 |\n",
        );
    }

    #[test]
    fn paired_table_has_a_row_per_measured_ratio_and_the_rounds_header() {
        // No HAProxy: its row is left out, while the floor's is shown and a goal on nginx
        // alone still judges every round.
        let table = table(
            Goal::AtMostNginx(0.8),
            &[
                (TargetKind::Floor, vec![Some(9.0), Some(12.0)]),
                (TargetKind::Nginx, vec![Some(10.0), Some(10.0)]),
                (TargetKind::Haproxy, vec![None, None]),
                (TargetKind::Gateway, vec![Some(7.0), Some(11.0)]),
            ],
        );
        assert_shows(&table, "| <= 0.8 x nginx | **no**, 1 of 2 rounds |");
        assert_shows(
            &table,
            "\nPaired ratios, round by round (each round's own values; spread is lowest–highest):\n\n\
                 | metric | ratio | round 1 | round 2 | spread |\n\
                 |---|---|---:|---:|---:|\n\
                 | m | gateway / nginx | 0.70 | 1.10 | 0.70–1.10 |\n\
                 | m | floor / nginx | 0.90 | 1.20 | 0.90–1.20 |\n\
                 \nEvery round, to show drift",
        );
    }

    #[test]
    fn failed_operations_are_totalled_per_target_with_their_causes() {
        let metrics = vec![Metric::new("m".into(), Goal::None)];
        let samples = vec![
            Sample::errors(1, TargetKind::Gateway, 3),
            Sample::failures(1, TargetKind::Gateway, "ConnectionReset", 2),
            Sample::failures(1, TargetKind::Gateway, "answered 503", 1),
            Sample::errors(2, TargetKind::Gateway, 4),
            Sample::failures(2, TargetKind::Gateway, "ConnectionReset", 4),
            Sample::errors(2, TargetKind::Nginx, 1),
        ];
        let table = render(
            &metrics,
            &[TargetKind::Nginx, TargetKind::Haproxy, TargetKind::Gateway],
            2,
            &samples,
        );
        assert_shows(
            &table,
            "Failed operations (timeouts, refusals, resets): nginx 1, haproxy 0, \
             gateway 7 (6 ConnectionReset, 1 answered 503).",
        );
    }
}
