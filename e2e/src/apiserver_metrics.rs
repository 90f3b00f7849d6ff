//! Counting the apiserver's writes from its own `apiserver_request_total` metric.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::kubectl::Kubectl;

/// Verbs that only read.
const READ_VERBS: [&str; 5] = ["GET", "LIST", "WATCH", "WATCHLIST", "CONNECT"];

/// Write requests served so far, by "resource[/subresource] VERB".
pub fn write_counts(kubectl: &Kubectl) -> Result<BTreeMap<String, u64>> {
    Ok(parse_write_counts(&kubectl.raw("/metrics")?))
}

/// Write requests in Prometheus text, by "resource[/subresource] VERB".
pub fn parse_write_counts(text: &str) -> BTreeMap<String, u64> {
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
    counts
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_summed_by_resource_and_verb_and_reads_are_left_out() {
        let text = r#"# TYPE apiserver_request_total counter
apiserver_request_total{code="201",resource="configmaps",subresource="",verb="APPLY"} 3
apiserver_request_total{code="200",resource="configmaps",subresource="",verb="APPLY"} 2
apiserver_request_total{code="200",resource="websocketservices",subresource="status",verb="APPLY"} 4
apiserver_request_total{code="200",resource="configmaps",subresource="",verb="LIST"} 90
"#;
        let counts = parse_write_counts(text);
        assert_eq!(counts["configmaps APPLY"], 5);
        assert_eq!(counts["websocketservices/status APPLY"], 4);
        assert_eq!(counts.len(), 2);
    }

    #[test]
    fn the_difference_keeps_what_grew() {
        let before = BTreeMap::from([("a POST".to_owned(), 2), ("b PUT".to_owned(), 5)]);
        let after = BTreeMap::from([("a POST".to_owned(), 7), ("b PUT".to_owned(), 5)]);
        assert_eq!(
            difference(&before, &after),
            BTreeMap::from([("a POST".to_owned(), 5)])
        );
    }
}
