//! `stoker bench --plot FILE.svg|FILE.png`: the autotuner over time —
//! goodput, concurrency (limit and in flight), part size — so a user can
//! watch the controller converge. PNG is the SVG rasterized with resvg.

use std::path::Path;

use plotters::prelude::*;

use crate::fetch::TunePoint;

/// One line of a pane: its legend, colour and points.
type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// Draws `points` into an SVG or PNG file at `path` (by its extension).
pub fn plot_tuning(path: &Path, points: &[TunePoint], title: &str) -> anyhow::Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => draw_svg(path, points, title),
        Some("png") => {
            let svg = tempfile::Builder::new().suffix(".svg").tempfile()?;
            draw_svg(svg.path(), points, title)?;
            rasterize(svg.path(), path)
        }
        _ => anyhow::bail!(crate::Error::Config(format!(
            "--plot writes SVG or PNG: name the file *.svg or *.png, not {}",
            path.display()
        ))),
    }
}

/// Renders the SVG at `svg` into a PNG at `png`.
fn rasterize(svg: &Path, png: &Path) -> anyhow::Result<()> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_system_fonts();
    // plotters asks for "sans-serif"; fontdb maps it to Arial, which Linux
    // machines rarely have: map it to a sans face that is installed.
    let families: Vec<String> =
        fonts.faces().flat_map(|f| f.families.iter().map(|(name, _)| name.clone())).collect();
    let preferred = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial", "Helvetica"];
    if let Some(family) = preferred
        .iter()
        .find(|p| families.iter().any(|f| f == *p))
        .map(|p| p.to_string())
        .or_else(|| families.first().cloned())
    {
        fonts.set_sans_serif_family(family);
    }
    let tree = usvg::Tree::from_data(&std::fs::read(svg)?, &options)?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| anyhow::anyhow!("a plot of {size:?} pixels cannot be drawn"))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.save_png(png).map_err(|e| anyhow::anyhow!("writing {}: {e}", png.display()))
}

fn draw_svg(path: &Path, points: &[TunePoint], title: &str) -> anyhow::Result<()> {
    if points.is_empty() {
        anyhow::bail!(
            "nothing to plot: the run was pinned (--concurrency N) or too short for one window"
        );
    }
    let t_max = points.iter().map(|p| p.t_secs).fold(0.0, f64::max).max(0.1);
    let root = SVGBackend::new(path, (1000, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let panes = root.split_evenly((3, 1));

    let draw = |pane: &DrawingArea<SVGBackend, plotters::coord::Shift>,
                label: &str,
                series: &[Series]|
     -> anyhow::Result<()> {
        let y_max =
            series.iter().flat_map(|s| s.2.iter().map(|p| p.1)).fold(0.0, f64::max).max(1.0) * 1.1;
        let mut chart = ChartBuilder::on(pane)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)?;
        chart.configure_mesh().x_desc("seconds").y_desc(label).draw()?;
        for (name, color, data) in series {
            let color = *color;
            chart
                .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    };

    let goodput: Vec<(f64, f64)> =
        smooth(points.iter().map(|p| (p.t_secs, p.goodput_bps / 1e6)).collect(), 10);
    draw(&panes[0], "goodput MB/s", &[("goodput (0.5 s mean)", BLUE, goodput)])?;
    let limit = points.iter().map(|p| (p.t_secs, p.concurrency as f64)).collect();
    let inflight = points.iter().map(|p| (p.t_secs, p.inflight)).collect();
    draw(
        &panes[1],
        "requests",
        &[("concurrency limit", RED, limit), ("in flight", GREEN, inflight)],
    )?;
    let part = points.iter().map(|p| (p.t_secs, p.part_bytes as f64 / (1 << 20) as f64)).collect();
    draw(&panes[2], "part MiB", &[("part size", MAGENTA, part)])?;
    root.present()?;
    Ok(())
}

/// A moving mean over `n` points (windows are 50 ms; goodput per window is
/// spiky).
fn smooth(points: Vec<(f64, f64)>, n: usize) -> Vec<(f64, f64)> {
    (0..points.len())
        .map(|i| {
            let from = i.saturating_sub(n - 1);
            let window = &points[from..=i];
            (points[i].0, window.iter().map(|p| p.1).sum::<f64>() / window.len() as f64)
        })
        .collect()
}
