//! Reading what a user sees: `kubectl get` tables, `kubectl describe`, `kubectl diff`,
//! Secret data.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};

use crate::kubectl::Kubectl;

/// `kubectl get KIND NAME` as a map from column header to value.
pub fn table_row(kubectl: &Kubectl, kind: &str, name: &str) -> Result<BTreeMap<String, String>> {
    parse_table_row(&kubectl.run(&["get", kind, name])?)
}

/// The first row of a kubectl table by column header (empty when kubectl printed nothing for
/// it). Columns are cut at the headers' offsets, as kubectl aligns them.
pub fn parse_table_row(table: &str) -> Result<BTreeMap<String, String>> {
    let mut lines = table.lines();
    let header = lines.next().context("kubectl get printed nothing")?;
    let row = lines.next().context("kubectl get printed no row")?;
    ensure!(
        header.is_ascii() && row.is_ascii(),
        "non-ASCII table:\n{table}"
    );
    let starts: Vec<usize> = header
        .char_indices()
        .filter(|&(at, c)| c != ' ' && (at == 0 || header.as_bytes()[at - 1] == b' '))
        .map(|(at, _)| at)
        .collect();
    let mut columns = BTreeMap::new();
    for (index, &start) in starts.iter().enumerate() {
        let end = starts.get(index + 1).copied().unwrap_or(usize::MAX);
        let cell = |line: &str| {
            line.get(start..end.min(line.len()))
                .unwrap_or("")
                .trim()
                .to_owned()
        };
        columns.insert(cell(header), cell(row));
    }
    Ok(columns)
}

/// One key of a Secret's data, decoded by kubectl itself.
pub fn secret_value(kubectl: &Kubectl, secret: &str, key: &str) -> Result<String> {
    let template = format!("--template={{{{index .data \"{key}\" | base64decode}}}}");
    let value = kubectl.run(&["get", "secret", secret, "-o", "go-template", &template])?;
    ensure!(
        !value.is_empty() && value != "<no value>",
        "Secret {secret} has no key {key}"
    );
    Ok(value)
}

/// Fails unless `kubectl diff -f FILE` reports no difference (exit code 0).
pub fn assert_no_diff(kubectl: &Kubectl, file: &str) -> Result<()> {
    let outcome = kubectl.outcome(&["diff", "-f", file], None)?;
    if !outcome.success || !outcome.stdout.trim().is_empty() {
        bail!(
            "kubectl diff -f {file} is not empty:\n{}{}",
            outcome.stdout,
            outcome.stderr
        );
    }
    Ok(())
}

/// The Events section of `kubectl describe`, which must list at least one event.
pub fn described_events(description: &str) -> Result<&str> {
    let events = description
        .split_once("\nEvents:")
        .map(|(_, events)| events)
        .context("kubectl describe has no Events section")?;
    ensure!(
        !events.trim_start().starts_with("<none>"),
        "kubectl describe lists no events:\n{description}"
    );
    Ok(events)
}

/// The condition types listed by `kubectl describe` (its `Type:` lines).
pub fn described_condition_types(description: &str) -> Vec<&str> {
    description
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Type:"))
        .map(str::trim)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_column_reads_as_empty_and_the_rest_stay_aligned() {
        let table = "NAME   READY   REPLICAS   ENDPOINT                CERT-EXPIRES   AGE\n\
                     chat   True    2          ws://chat.demo.svc/                    4s\n";
        let row = parse_table_row(table).unwrap();
        assert_eq!(row["READY"], "True");
        assert_eq!(row["ENDPOINT"], "ws://chat.demo.svc/");
        assert_eq!(row["CERT-EXPIRES"], "");
        assert_eq!(row["AGE"], "4s");
    }

    #[test]
    fn describe_condition_types_are_read_from_type_lines() {
        let description =
            "Status:\n  Conditions:\n    Type:  Ready\n    Type:  Degraded\nEvents:  <none>\n";
        assert_eq!(
            described_condition_types(description),
            ["Ready", "Degraded"]
        );
        assert!(described_events(description).is_err());
    }
}
