//! The dashboard's panels drawn from a real Prometheus, for people to look at: each panel's
//! series over a time range as an SVG line chart on one HTML page, photographed into a PNG by
//! headless Chromium. No JavaScript and nothing fetched: the page is complete as written.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::prometheus::RangeSeries;

/// One chart: a title and the series drawn in it.
pub struct Panel {
    pub title: String,
    pub series: Vec<RangeSeries>,
}

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 220.0;
/// Room for the axis labels.
const MARGIN: f64 = 48.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];
/// The PNG file signature.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Draws `panels` two to a row and writes the picture to `out`.
pub fn render_png(panels: &[Panel], out: &Path) -> Result<()> {
    let work = tempfile::Builder::new()
        .prefix("wsfleet-panels-")
        .tempdir()?;
    let page = work.path().join("panels.html");
    std::fs::write(&page, page_html(panels)).context("writing the panels page")?;
    let rows = panels.len().div_ceil(2);
    let window_height = 24 + rows * (HEIGHT as usize + 2 * MARGIN as usize + 24);
    let output = Command::new("chromium")
        .env("HOME", work.path())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
        ])
        .arg(format!(
            "--user-data-dir={}",
            work.path().join("profile").display()
        ))
        .arg(format!("--window-size=1240,{window_height}"))
        .arg(format!("--screenshot={}", out.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .context("running chromium (scripts/install-test-deps installs it)")?;
    let png = std::fs::read(out).with_context(|| {
        format!(
            "chromium wrote no {}: {}",
            out.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    ensure!(
        png.starts_with(PNG_SIGNATURE),
        "{} is not a PNG",
        out.display()
    );
    Ok(())
}

fn page_html(panels: &[Panel]) -> String {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><style>\
         body{font:12px sans-serif;margin:12px;background:#fff}\
         figure{display:inline-block;margin:0 12px 12px 0}\
         figcaption{font-weight:bold;margin-bottom:4px}</style></head><body>",
    );
    for panel in panels {
        let _ = write!(
            html,
            "<figure><figcaption>{}</figcaption>{}</figure>",
            escape(&panel.title),
            chart_svg(&panel.series)
        );
    }
    html.push_str("</body></html>");
    html
}

/// A line chart of `series` with its value range on the left and a legend below.
fn chart_svg(series: &[RangeSeries]) -> String {
    let points = series.iter().flat_map(|series| series.points.iter());
    let (mut t0, mut t1, mut v0, mut v1) = (f64::MAX, f64::MIN, 0.0_f64, f64::MIN);
    for &(t, v) in points.filter(|(_, v)| v.is_finite()) {
        (t0, t1, v0, v1) = (t0.min(t), t1.max(t), v0.min(v), v1.max(v));
    }
    if t1 <= t0 {
        t1 = t0 + 1.0;
    }
    if v1 <= v0 {
        v1 = v0 + 1.0;
    }
    let x = |t: f64| MARGIN + (t - t0) / (t1 - t0) * WIDTH;
    let y = |v: f64| MARGIN / 2.0 + HEIGHT - (v - v0) / (v1 - v0) * HEIGHT;
    let total_height = HEIGHT + 2.0 * MARGIN;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{total_height}\">\
         <rect x=\"{MARGIN}\" y=\"{}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"none\" stroke=\"#ccc\"/>\
         <text x=\"2\" y=\"{}\">{}</text><text x=\"2\" y=\"{}\">{}</text>",
        WIDTH + MARGIN + 8.0,
        MARGIN / 2.0,
        MARGIN / 2.0 + 10.0,
        short(v1),
        MARGIN / 2.0 + HEIGHT,
        short(v0),
    );
    for (index, series) in series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let line: Vec<String> = series
            .points
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" fill=\"{colour}\">{}</text>",
            line.join(" "),
            MARGIN + (index % 2) as f64 * WIDTH / 2.0,
            total_height - MARGIN / 2.0 + (index / 2) as f64 * 12.0,
            escape(&series.name()),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A value as an axis label: integers plainly, others to three significant places.
fn short(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value}")
    } else {
        format!("{value:.3}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_become_escaped_polylines_within_the_chart() {
        let series = vec![RangeSeries {
            labels: serde_json::from_str(r#"{"code": "<1000>"}"#).unwrap(),
            points: vec![(0.0, 0.0), (10.0, 4.0), (20.0, f64::NAN)],
        }];
        let svg = chart_svg(&series);
        assert!(svg.contains(r#"points="48.0,244.0 608.0,24.0""#), "{svg}");
        assert!(svg.contains("code=&lt;1000&gt;"), "{svg}");
    }
}
