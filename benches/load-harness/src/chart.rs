//! The chart beside the report: requests/s and CPU per request of each server in each
//! scenario, as grouped bars, drawn as SVG with plotters (text is laid out without fonts:
//! the viewer's sans-serif draws it).

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One bar: a server's value in a scenario.
#[derive(Debug, Clone)]
pub struct Bar {
    /// The scenario (a group of bars).
    pub group: &'static str,
    /// The server (a color, in the legend).
    pub series: &'static str,
    /// The value, in the panel's unit.
    pub value: f64,
}

/// One panel of the chart: a measure, for every scenario and server.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Caption, with unit.
    pub title: &'static str,
    /// The bars, in group order.
    pub bars: Vec<Bar>,
}

/// Size of the SVG, pixels.
const WIDTH: u32 = 1400;
/// Height of each panel, pixels.
const PANEL_HEIGHT: u32 = 430;
/// Colors of the servers, by order of first appearance.
const COLORS: [RGBColor; 6] = [
    RGBColor(230, 85, 13),
    RGBColor(49, 163, 84),
    RGBColor(49, 130, 189),
    RGBColor(117, 107, 177),
    RGBColor(140, 140, 140),
    RGBColor(189, 158, 57),
];

/// The SVG text of `panels`, stacked.
pub fn draw(panels: &[Panel]) -> Result<String> {
    let mut svg = String::new();
    {
        let height = PANEL_HEIGHT * (panels.len().max(1) as u32);
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let areas = root.split_evenly((panels.len().max(1), 1));
        for (panel, area) in panels.iter().zip(&areas) {
            draw_panel(panel, area, &root)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn draw_panel<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, plotters::coord::Shift>,
    root: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<()> {
    let groups = unique(panel.bars.iter().map(|b| b.group));
    let series = unique(panel.bars.iter().map(|b| b.series));
    let top = panel
        .bars
        .iter()
        .map(|b| b.value)
        .fold(0.0, f64::max)
        .max(1.0)
        // Room above the highest bar for the legend (upper right).
        * 1.6;
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..groups.len().max(1) as f64, 0.0..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_formatter(&|v| short(*v))
        .draw()
        .map_err(plot_error)?;
    // Each group's bars side by side, centred in its slot, as wide as the fullest group's.
    let width = 0.8 / series.len().max(1) as f64;
    let place = |bar: &Bar| {
        let in_group: Vec<&str> = panel
            .bars
            .iter()
            .filter(|b| b.group == bar.group)
            .map(|b| b.series)
            .collect();
        let g = groups.iter().position(|g| *g == bar.group).unwrap_or(0) as f64;
        let i = in_group.iter().position(|s| *s == bar.series).unwrap_or(0) as f64;
        let left = g + 0.5 - width * in_group.len() as f64 / 2.0 + i * width;
        (left, left + width)
    };
    for (n, name) in series.iter().enumerate() {
        let color = COLORS[n % COLORS.len()];
        let bars = panel.bars.iter().filter(|b| b.series == *name);
        chart
            .draw_series(bars.clone().map(|b| {
                let (left, right) = place(b);
                Rectangle::new([(left, 0.0), (right, b.value)], color.filled())
            }))
            .map_err(plot_error)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        let value_style = TextStyle::from(("sans-serif", 10).into_font())
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        chart
            .draw_series(bars.map(|b| {
                let (left, right) = place(b);
                Text::new(
                    short(b.value),
                    ((left + right) / 2.0, b.value),
                    value_style.clone(),
                )
            }))
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(plot_error)?;
    // The scenario names under their groups, in the root area's pixels.
    let label_style =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (g, name) in groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
        root.draw(&Text::new(*name, (x, y + 8), label_style.clone()))
            .map_err(plot_error)?;
    }
    Ok(())
}

/// The distinct values, in order of first appearance.
fn unique<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// A value in few characters: 24.3k, 31, 2.5.
fn short(v: f64) -> String {
    match v {
        v if v >= 10_000.0 => format!("{:.1}k", v / 1e3),
        v if v >= 100.0 => format!("{v:.0}"),
        v => format!("{v:.1}"),
    }
}

fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(group: &'static str, series: &'static str, value: f64) -> Bar {
        Bar {
            group,
            series,
            value,
        }
    }

    #[test]
    fn draws_every_scenario_server_and_value() {
        let panels = [
            Panel {
                title: "requests/s",
                bars: vec![
                    bar("cache-hit-1k", "proxy-app", 47_613.0),
                    bar("cache-hit-1k", "nginx", 33_493.0),
                    bar("pass-1k", "proxy-app", 16_233.0),
                    bar("pass-1k", "nginx", 24_852.0),
                    bar("pass-1k", "HAProxy", 21_000.0),
                    bar("pass-1k", "Caddy", 6_500.0),
                ],
            },
            Panel {
                title: "CPU µs per request",
                bars: vec![bar("pass-1k", "proxy-app", 34.0)],
            },
        ];
        let svg = draw(&panels).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for text in [
            "cache-hit-1k",
            "pass-1k",
            "HAProxy",
            "Caddy",
            "47.6k",
            "CPU µs per request",
            "34.0",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        // One filled rectangle per bar at least (plus legend and background).
        assert!(svg.matches("<rect").count() >= 7);
    }

    #[test]
    fn values_are_short() {
        assert_eq!(short(24_310.0), "24.3k");
        assert_eq!(short(312.4), "312");
        assert_eq!(short(2.54), "2.5");
    }
}
