//! The latency-vs-load plot of `compare`: one line per target, p50 thick and
//! p99 thin (both with markers), achieved throughput on x, latency on a log
//! scale (p50 and p99 are often an order of magnitude apart). SVG only, so
//! the build needs no font or image libraries.

use std::path::Path;

use plotters::prelude::*;

/// One target's points: (achieved msg/s, p50 ms, p99 ms).
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64, f64)>,
}

/// Line colours of every bench plot (matplotlib's first six).
pub(crate) const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws the plot into `path` (SVG).
pub(crate) fn latency_vs_load(path: &Path, title: &str, series: &[Series]) -> Result<(), String> {
    let points = series.iter().flat_map(|s| s.points.iter());
    let max_x = points.clone().map(|p| p.0).fold(1.0, f64::max) * 1.1;
    let max_y = points.clone().map(|p| p.2.max(p.1)).fold(0.1, f64::max) * 1.5;
    let min_y = points.map(|p| p.1.min(p.2)).filter(|v| *v > 0.0).fold(max_y, f64::min) / 1.5;
    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_x, (min_y.max(0.001)..max_y).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("achieved throughput (messages/s)")
        .y_desc("latency (ms, log scale)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let p50: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, p.1)).collect();
        let p99: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, p.2)).collect();
        chart
            .draw_series(LineSeries::new(p50.clone(), color.stroke_width(3)))
            .map_err(|e| e.to_string())?
            .label(format!("{} p50", s.name))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
        chart
            .draw_series(LineSeries::new(p99.clone(), color.stroke_width(1)))
            .map_err(|e| e.to_string())?
            .label(format!("{} p99", s.name))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1)));
        chart
            .draw_series(p50.into_iter().chain(p99).map(|p| Circle::new(p, 3, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
