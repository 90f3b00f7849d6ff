//! The dashboard's panels drawn from a real Prometheus, for people to look at: each panel's
//! series over a time range as an SVG line chart on one HTML page, photographed into a PNG by
//! headless Chromium. No JavaScript and nothing fetched: the page is complete as written.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};

/// One chart: a title and the lines drawn in it.
pub struct Panel {
    pub title: String,
    pub lines: Vec<Line>,
}

/// One series of a chart: its legend (the panel target's `legendFormat` filled in) and its
/// points, `(unix time, value)`.
pub struct Line {
    pub legend: String,
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 520.0;
const HEIGHT: f64 = 200.0;
/// Room for the axis labels.
const MARGIN: f64 = 48.0;
/// Height of one legend line.
const LINE: f64 = 14.0;
/// Legend lines a chart shows at most; the rest are counted in one more line.
const LEGEND_LINES: usize = 8;
/// A figure's width on the page: the chart, its value labels and the gap to the next figure.
const FIGURE_WIDTH: usize = (WIDTH + MARGIN + 8.0) as usize + 12;
/// The caption above each chart and the gap below it.
const CAPTION: usize = 36;
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
    let window_width = 2 * FIGURE_WIDTH + 40;
    let window_height: usize = panels
        .chunks(2)
        .map(|row| {
            row.iter()
                .map(|panel| chart_height(&panel.lines) as usize + CAPTION)
                .max()
                .unwrap_or_default()
        })
        .sum::<usize>()
        + 24;
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
        .arg(format!("--window-size={window_width},{window_height}"))
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
         figure{display:inline-block;vertical-align:top;margin:0 12px 12px 0}\
         figcaption{font-weight:bold;margin-bottom:4px}</style></head><body>",
    );
    for panel in panels {
        let _ = write!(
            html,
            "<figure><figcaption>{}</figcaption>{}</figure>",
            escape(&panel.title),
            chart_svg(&panel.lines)
        );
    }
    html.push_str("</body></html>");
    html
}

/// The legend of `lines`: one entry per line that is not zero throughout, and one counting
/// the flat-zero ones. Each entry carries the index of its line's colour.
fn legend(lines: &[Line]) -> Vec<(Option<usize>, String)> {
    let mut entries = Vec::new();
    let mut zero = 0;
    for (index, line) in lines.iter().enumerate() {
        if line.points.iter().all(|&(_, v)| v == 0.0) {
            zero += 1;
        } else {
            entries.push((Some(index), line.legend.clone()));
        }
    }
    if entries.len() > LEGEND_LINES {
        let hidden = entries.len() - (LEGEND_LINES - 1);
        entries.truncate(LEGEND_LINES - 1);
        entries.push((None, format!("and {hidden} more series")));
    }
    if zero > 0 {
        entries.push((None, format!("{zero} series at 0 throughout")));
    }
    entries
}

/// The chart's height: the plot, its margins and the legend.
fn chart_height(lines: &[Line]) -> f64 {
    HEIGHT + MARGIN + legend(lines).len() as f64 * LINE
}

/// A line chart of `lines` with its value range on the left and a legend below.
fn chart_svg(lines: &[Line]) -> String {
    let points = lines.iter().flat_map(|line| line.points.iter());
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
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\">\
         <rect x=\"{MARGIN}\" y=\"{}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"none\" stroke=\"#ccc\"/>\
         <text x=\"2\" y=\"{}\">{}</text><text x=\"2\" y=\"{}\">{}</text>\
         <text x=\"{MARGIN}\" y=\"{}\" fill=\"#888\">{:.0} s</text>",
        WIDTH + MARGIN + 8.0,
        chart_height(lines),
        MARGIN / 2.0,
        MARGIN / 2.0 + 10.0,
        short(v1),
        MARGIN / 2.0 + HEIGHT,
        short(v0),
        MARGIN / 2.0 + HEIGHT + LINE,
        t1 - t0,
    );
    for (index, line) in lines.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let points: Vec<String> = line
            .points
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.join(" "),
        );
    }
    for (row, (index, text)) in legend(lines).iter().enumerate() {
        let colour = index.map_or("#888", |index| COLOURS[index % COLOURS.len()]);
        let _ = write!(
            svg,
            "<text x=\"{MARGIN}\" y=\"{}\" fill=\"{colour}\">{}</text>",
            HEIGHT + MARGIN + LINE * (row as f64 + 0.5),
            escape(text),
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

    fn line(legend: &str, points: Vec<(f64, f64)>) -> Line {
        Line {
            legend: legend.to_owned(),
            points,
        }
    }

    #[test]
    fn lines_become_escaped_polylines_within_the_chart() {
        let chart = vec![line(
            "code <1000>",
            vec![(0.0, 0.0), (10.0, 4.0), (20.0, f64::NAN)],
        )];
        let svg = chart_svg(&chart);
        assert!(svg.contains(r#"points="48.0,224.0 568.0,24.0""#), "{svg}");
        assert!(svg.contains("code &lt;1000&gt;"), "{svg}");
    }

    #[test]
    fn the_legend_lists_lines_and_counts_the_flat_zero_ones() {
        let mut chart = vec![
            line("up", vec![(0.0, 1.0), (2.0, 2.0)]),
            line("down", vec![(0.0, 0.0), (2.0, 0.0)]),
        ];
        assert_eq!(
            legend(&chart),
            vec![
                (Some(0), "up".to_owned()),
                (None, "1 series at 0 throughout".to_owned())
            ]
        );
        for index in 0..10 {
            chart.push(line(&format!("d{index}"), vec![(0.0, 1.0)]));
        }
        let entries = legend(&chart);
        assert_eq!(entries.len(), LEGEND_LINES + 1);
        assert_eq!(
            entries[LEGEND_LINES - 1],
            (None, "and 4 more series".to_owned())
        );
    }
}
