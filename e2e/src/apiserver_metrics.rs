//! Counting the apiserver's writes from its own `apiserver_request_total` metric.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::kubectl::Kubectl;

/// Verbs that only read.
const READ_VERBS: [&str; 5] = ["GET", "LIST", "WATCH", "WATCHLIST", "CONNECT"];

/// Write requests served so far, by "resource[/subresource] VERB".
pub fn write_counts(kubectl: &Kubectl) -> Result<BTreeMap<String, u64>> {
    let text = kubectl.raw("/metrics")?;
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |key: &str| {
            labels
                .split(',')
                .find_map(|pair| pair.strip_prefix(&format!("{key}=\"")))
                .map(|value| value.trim_end_matches('"'))
                .unwrap_or("")
        };
        let verb = label("verb");
        if READ_VERBS.contains(&verb) {
            continue;
        }
        let resource = match label("subresource") {
            "" => label("resource").to_owned(),
            subresource => format!("{}/{subresource}", label("resource")),
        };
        let count = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        *counts.entry(format!("{resource} {verb}")).or_insert(0) += count;
    }
    Ok(counts)
}

/// `after - before`, keeping only keys that grew.
pub fn difference(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(key, count)| {
            let grown = count.saturating_sub(before.get(key).copied().unwrap_or(0));
            (grown > 0).then(|| (key.clone(), grown))
        })
        .collect()
}
