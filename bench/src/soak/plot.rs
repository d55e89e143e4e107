//! The soak's plots: one value (or a few) over time, with the phase
//! boundaries as vertical lines and reference levels (the baseline, the
//! 5 % band) as horizontal ones. SVG only, like the other plots of the
//! bench: no font or image libraries in the build.

use std::path::Path;

use plotters::prelude::*;

use crate::plot::COLORS;

/// One line: name and (seconds, value) points.
pub(crate) struct Line {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
}

/// A plot: lines, vertical markers at times, horizontal reference levels.
pub(crate) struct Timeline<'a> {
    pub(crate) title: &'a str,
    pub(crate) y_desc: &'a str,
    pub(crate) lines: Vec<Line>,
    /// (seconds, label) drawn as grey vertical lines.
    pub(crate) marks: Vec<(f64, &'a str)>,
    /// (value, label) drawn as dashed-looking thin horizontal lines.
    pub(crate) levels: Vec<(f64, String)>,
}

const GREY: RGBColor = RGBColor(150, 150, 150);

/// Draws `t` into `path` (SVG).
pub(crate) fn timeline(path: &Path, t: &Timeline<'_>) -> Result<(), String> {
    let points = t.lines.iter().flat_map(|l| l.points.iter());
    let max_x = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let max_x = t.marks.iter().map(|m| m.0).fold(max_x, f64::max);
    let max_y = points.map(|p| p.1).fold(1.0, f64::max);
    let max_y = t.levels.iter().map(|l| l.0).fold(max_y, f64::max) * 1.1;
    let root = SVGBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(t.title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_x, 0.0..max_y)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds since the gateway started")
        .y_desc(t.y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    for (x, label) in &t.marks {
        chart
            .draw_series(LineSeries::new([(*x, 0.0), (*x, max_y)], GREY.stroke_width(1)))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series([Text::new(
                label.to_string(),
                (*x, max_y * 0.98),
                ("sans-serif", 12).into_font().color(&GREY),
            )])
            .map_err(|e| e.to_string())?;
    }
    for (i, (y, label)) in t.levels.iter().enumerate() {
        let color = COLORS[(i + 3) % COLORS.len()];
        chart
            .draw_series(LineSeries::new([(0.0, *y), (max_x, *y)], color.stroke_width(1)))
            .map_err(|e| e.to_string())?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1)));
    }
    for (i, line) in t.lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(line.points.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(line.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
