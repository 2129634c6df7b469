//! The plots of a sweep (SVG and PNG): accuracy vs level and vs GOps.

use super::*;

pub(super) const PLOT_SIZE: (u32, u32) = (1000, 640);
pub(super) const FONT: &str = "sans-serif";
pub(super) const ACC_DESC: &str = "top-1 accuracy on the subset (%)";

/// Tableau 10: one colour per subset.
pub(super) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Register the embedded DejaVu Sans as the plots' font, once. Both backends lay text out with it.
pub(super) fn ensure_font() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
                .and_then(|()| plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()))
                .map_err(|_| "the embedded DejaVu Sans font could not be parsed".to_string())
        })
        .clone()
}

pub(super) type PlotResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// A chart that can be drawn on any plotters backend.
pub(super) trait Plot {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static;
}

/// Draw `plot` as `<stem>.svg` and `<stem>.png` in `dir`, and list both in `files`.
pub(super) fn write_plot<P: Plot>(dir: &Path, stem: &str, plot: &P, files: &mut Vec<String>) -> Result<()> {
    let svg_path = dir.join(format!("{stem}.svg"));
    let png_path = dir.join(format!("{stem}.png"));
    ensure_font().map_err(|e| Error::file(&png_path, e))?;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        plot.draw(&root).map_err(|e| Error::file(&svg_path, format!("drawing: {e}")))?;
        root.present().map_err(|e| Error::file(&svg_path, format!("drawing: {e}")))?;
    }
    write_text(&svg_path, &svg)?;

    let (w, h) = PLOT_SIZE;
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, PLOT_SIZE).into_drawing_area();
        plot.draw(&root).map_err(|e| Error::file(&png_path, format!("drawing: {e}")))?;
        root.present().map_err(|e| Error::file(&png_path, format!("drawing: {e}")))?;
    }
    image::save_buffer_with_format(&png_path, &buf, w, h, image::ExtendedColorType::Rgb8, image::ImageFormat::Png)
        .map_err(|e| Error::file(&png_path, e.to_string()))?;
    files.push(format!("{stem}.svg"));
    files.push(format!("{stem}.png"));
    Ok(())
}

/// The unpruned model in a chart: a horizontal line at its accuracy, or a point (GOps, accuracy).
#[derive(Clone, Copy, Debug)]
pub(super) enum Reference {
    Line(f64),
    Point(f64, f64),
}

/// A subset's points for the plots: (x, accuracy %) pairs per pruned pipeline (in the order of
/// [`Pipe`]), and the unpruned model.
pub(super) struct Series {
    pub(super) subset: String,
    pub(super) color: RGBColor,
    pub(super) curves: Vec<(Pipe, Vec<(f64, f64)>)>,
    pub(super) unpruned: Option<Reference>,
}

impl Series {
    fn xs(&self) -> impl Iterator<Item = f64> + '_ {
        self.curves.iter().flat_map(|(_, c)| c.iter().map(|p| p.0))
    }
}

/// How a curve is drawn: its line dashed or solid, its points' marker.
#[derive(Clone, Copy)]
pub(super) enum Mark {
    /// Solid line, filled circles.
    Circle,
    /// Dashed line, filled triangles.
    Triangle,
    /// Long thin dashes, hollow squares.
    Square,
}

/// The mark of each pruned pipeline: a new pipeline says here how it looks.
fn mark(p: Pipe) -> Option<Mark> {
    match p {
        Pipe::Aware => Some(Mark::Circle),
        Pipe::AwareUnlabeled => Some(Mark::Square),
        Pipe::Agnostic => Some(Mark::Triangle),
        // Drawn as a reference (a line or a cross), not as a curve.
        Pipe::Unpruned => None,
    }
}

pub(super) fn series(
    n: &NetworkData,
    x: impl Fn(Level, &Point) -> Option<f64>,
    reference: impl Fn(&SubsetData) -> Option<Reference>,
) -> Vec<Series> {
    n.subsets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let pts = |m: &BTreeMap<Level, Point>| -> Vec<(f64, f64)> {
                m.iter().filter_map(|(l, p)| Some((x(*l, p)?, p.acc()?))).collect()
            };
            Series {
                subset: s.subset.clone(),
                color: PALETTE[i % PALETTE.len()],
                curves: s.pruned.iter().map(|(&p, m)| (p, pts(m))).filter(|(_, c)| !c.is_empty()).collect(),
                unpruned: reference(s),
            }
        })
        .collect()
}

/// An axis range around `values`, padded by `pad` of its span, within `[lo, hi]`.
pub(super) fn padded(
    values: impl IntoIterator<Item = f64>,
    pad: f64,
    lo: f64,
    hi: f64,
    empty: (f64, f64),
) -> (f64, f64) {
    let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return empty;
    }
    let mn = v.iter().copied().fold(f64::INFINITY, f64::min);
    let mx = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = (mx - mn).max(1e-9);
    let (mut a, mut b) = ((mn - pad * span).max(lo), (mx + pad * span).min(hi));
    if b - a < 1e-6 {
        a = (mn - 1.0).max(lo);
        b = (mx + 1.0).min(hi);
        if b - a < 1e-6 {
            b = a + 1.0;
        }
    }
    (a, b)
}

/// The accuracy axis: every accuracy of the network's points, with a margin.
pub(super) fn acc_range(n: &NetworkData) -> (f64, f64) {
    let accs = n
        .subsets
        .iter()
        .flat_map(|s| s.pruned.values().flat_map(|m| m.values()).chain(s.unpruned.iter()).filter_map(Point::acc));
    padded(accs, 0.08, 0.0, 100.0, (0.0, 100.0))
}

pub(super) fn solid(c: RGBColor) -> ShapeStyle {
    c.stroke_width(2)
}

/// A tick label: at most 6 decimals, trailing zeros dropped (10, 72.5, 0.005).
pub(super) fn tick(v: &f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".to_string() } else { s.to_string() }
}

/// What a chart shows besides its series.
pub(super) struct Frame<'a> {
    pub(super) title: String,
    pub(super) x_desc: &'a str,
    pub(super) y_desc: &'a str,
    pub(super) x: (f64, f64),
    pub(super) y: (f64, f64),
    pub(super) legend: SeriesLabelPosition,
}

/// A white chart with its title, axes and grid, for `frame`.
fn axes<'a, DB: DrawingBackend + 'a>(
    root: &'a DrawingArea<DB, Shift>,
    frame: &Frame<'_>,
) -> std::result::Result<Chart<'a, DB>, Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(frame.title.as_str(), (FONT, 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(64)
        .build_cartesian_2d(frame.x.0..frame.x.1, frame.y.0..frame.y.1)?;
    chart
        .configure_mesh()
        .x_desc(frame.x_desc)
        .y_desc(frame.y_desc)
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 14))
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .light_line_style(BLACK.mix(0.03))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    Ok(chart)
}

/// The legend of the series drawn with labels, at `position`.
fn draw_legend<'a, DB: DrawingBackend + 'a>(chart: &mut Chart<'a, DB>, position: SeriesLabelPosition) -> PlotResult
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(position)
        .legend_area_size(30)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.6))
        .label_font((FONT, 14))
        .draw()?;
    Ok(())
}

/// Draw a chart: per subset, each pruned pipeline's curve in its [`mark`] (aware solid with filled
/// circles, agnostic dashed with triangles), the unpruned model dotted (a line) or a cross (a
/// point); legend entries "<subset> <pipeline>".
pub(super) fn draw_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    frame: Frame<'_>,
    ss: &[Series],
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    let (x0, x1) = frame.x;
    let mut chart = axes(root, &frame)?;
    for s in ss {
        let color = s.color;
        for (pipe, curve) in &s.curves {
            draw_curve(&mut chart, *pipe, curve, color, format!("{} {pipe}", s.subset))?;
        }
        match s.unpruned {
            Some(Reference::Line(acc)) => {
                chart
                    .draw_series(DashedLineSeries::new(vec![(x0, acc), (x1, acc)], 2, 5, solid(color)))?
                    .label(format!("{} unpruned", s.subset))
                    .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 24, y)], 2, 4, solid(color)));
            }
            Some(Reference::Point(g, acc)) => {
                let style = color.stroke_width(3);
                chart
                    .draw_series(std::iter::once(Cross::new((g, acc), 7, style)))?
                    .label(format!("{} unpruned", s.subset))
                    .legend(move |(x, y)| Cross::new((x + 12, y), 6, style));
            }
            None => {}
        }
    }
    draw_legend(&mut chart, frame.legend)
}

type Chart<'a, DB> =
    ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>;

/// One pruned pipeline's curve in its [`mark`], with its legend entry.
fn draw_curve<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    pipe: Pipe,
    curve: &[(f64, f64)],
    color: RGBColor,
    label: String,
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    draw_marked(chart, mark(pipe), curve, color, label)
}

/// A curve in `mark` (none: not drawn), with its legend entry.
fn draw_marked<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    mark: Option<Mark>,
    curve: &[(f64, f64)],
    color: RGBColor,
    label: String,
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    match mark {
        Some(Mark::Circle) => {
            chart.draw_series(LineSeries::new(curve.iter().copied(), solid(color)))?.label(label).legend(
                move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (24, 0)], solid(color))
                        + Circle::new((12, 0), 4, color.filled())
                },
            );
            chart.draw_series(curve.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        Some(Mark::Triangle) => {
            chart.draw_series(DashedLineSeries::new(curve.iter().copied(), 8, 5, solid(color)))?.label(label).legend(
                move |(x, y)| {
                    EmptyElement::at((x, y))
                        + DashedPathElement::new(vec![(0, 0), (24, 0)], 6, 3, solid(color))
                        + TriangleMarker::new((12, 0), 5, color.filled())
                },
            );
            chart.draw_series(curve.iter().map(|&p| TriangleMarker::new(p, 5, color.filled())))?;
        }
        Some(Mark::Square) => {
            let square = move |p: (f64, f64)| {
                EmptyElement::at(p) + Rectangle::new([(-4, -4), (4, 4)], ShapeStyle::from(color).stroke_width(2))
            };
            let thin = ShapeStyle::from(color).stroke_width(1);
            chart.draw_series(DashedLineSeries::new(curve.iter().copied(), 14, 4, thin))?.label(label).legend(
                move |(x, y)| {
                    EmptyElement::at((x, y))
                        + DashedPathElement::new(vec![(0, 0), (24, 0)], 9, 3, thin)
                        + Rectangle::new([(8, -4), (16, 4)], ShapeStyle::from(color).stroke_width(2))
                },
            );
            chart.draw_series(curve.iter().map(|&p| square(p)))?;
        }
        None => {}
    }
    Ok(())
}

/// A named curve of a chart that is not accuracy per pipeline (see [`draw_xy`]).
pub(super) struct Curve {
    pub(super) label: String,
    pub(super) color: RGBColor,
    pub(super) mark: Mark,
    pub(super) points: Vec<(f64, f64)>,
    /// A text beside each point (none where empty).
    pub(super) labels: Vec<String>,
}

/// Draw a chart of named curves, and horizontal dotted reference lines (label, colour, y).
pub(super) fn draw_xy<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    frame: Frame<'_>,
    curves: &[Curve],
    refs: &[(String, RGBColor, f64)],
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    let (x0, x1) = frame.x;
    let mut chart = axes(root, &frame)?;
    for c in curves {
        draw_marked(&mut chart, Some(c.mark), &c.points, c.color, c.label.clone())?;
        let style = TextStyle::from((FONT, 13).into_font()).color(&c.color);
        chart.draw_series(
            c.points
                .iter()
                .zip(&c.labels)
                .map(|(&p, t)| EmptyElement::at(p) + Text::new(t.clone(), (6, -16), style.clone())),
        )?;
    }
    for (label, color, y) in refs {
        let color = *color;
        chart
            .draw_series(DashedLineSeries::new(vec![(x0, *y), (x1, *y)], 2, 5, solid(color)))?
            .label(label.clone())
            .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 24, y)], 2, 4, solid(color)));
    }
    draw_legend(&mut chart, frame.legend)
}

/// Accuracy vs pruning level, one colour per subset; the unpruned model as a dotted line.
pub(super) struct LevelPlot<'a>(pub(super) &'a NetworkData, pub(super) LevelOf);

impl Plot for LevelPlot<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static,
    {
        let n = self.0;
        let ss = series(n, |l, _| Some(l.pct()), |s| s.unpruned.as_ref().and_then(Point::acc).map(Reference::Line));
        let max_level = n.subsets.iter().flat_map(|s| s.levels()).map(Level::pct).fold(0.0, f64::max);
        let x_desc = format!("pruning level ({})", self.1.describe());
        let frame = Frame {
            title: format!("{}: test top-1 on the subset vs pruning level", n.network),
            x_desc: &x_desc,
            y_desc: ACC_DESC,
            x: (0.0, (max_level + 5.0).clamp(10.0, 100.0)),
            y: acc_range(n),
            legend: SeriesLabelPosition::LowerLeft,
        };
        draw_chart(root, frame, &ss)
    }
}

/// Accuracy vs inference GOps: aware and agnostic points at their `gops_after`, the unpruned model
/// at `gops_before`.
pub(super) struct GopsPlot<'a>(pub(super) &'a NetworkData);

impl Plot for GopsPlot<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static,
    {
        let n = self.0;
        cost_chart(
            root,
            n,
            |p| p.gops_after,
            SubsetData::gops_unpruned,
            format!("{}: test top-1 on the subset vs inference GOps", n.network),
            "inference GOps per image (after pruning; unpruned: before)",
        )
    }
}

/// Accuracy against a cost of each pruned point (`x`), the unpruned model a cross at its own cost
/// (`unpruned_x`): curves sorted by the cost, the axis from 0.
fn cost_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    n: &NetworkData,
    x: impl Fn(&Point) -> Option<f64>,
    unpruned_x: impl Fn(&SubsetData) -> Option<f64>,
    title: String,
    x_desc: &str,
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    let mut ss =
        series(n, |_, p| x(p), |s| Some(Reference::Point(unpruned_x(s)?, s.unpruned.as_ref().and_then(Point::acc)?)));
    for (_, curve) in ss.iter_mut().flat_map(|s| s.curves.iter_mut()) {
        curve.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let xs = ss.iter().flat_map(|s| {
        let r = match s.unpruned {
            Some(Reference::Point(g, _)) => Some(g),
            _ => None,
        };
        s.xs().chain(r)
    });
    let (_, x1) = padded(xs, 0.05, 0.0, f64::INFINITY, (0.0, 1.0));
    let frame = Frame {
        title,
        x_desc,
        y_desc: ACC_DESC,
        x: (0.0, x1),
        y: acc_range(n),
        legend: SeriesLabelPosition::LowerRight,
    };
    draw_chart(root, frame, &ss)
}

/// Accuracy vs measured inference latency at batch 1: aware and agnostic points at their
/// `infer_ms_per_image_b1_after`, the unpruned model at its `infer_ms_per_image_b1_before`.
pub(super) struct LatencyPlot<'a>(pub(super) &'a NetworkData);

impl LatencyPlot<'_> {
    /// Whether the network has any latency to draw.
    pub(super) fn any(n: &NetworkData) -> bool {
        n.subsets
            .iter()
            .flat_map(|s| s.pruned.values().flat_map(|m| m.values()))
            .any(|p| p.costs.infer_b1_after.is_some())
    }
}

impl Plot for LatencyPlot<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static,
    {
        let n = self.0;
        let unpruned_ms = |s: &SubsetData| {
            s.unpruned
                .as_ref()
                .and_then(|p| p.costs.infer_b1_before.or(p.costs.infer_b1_after))
                .or_else(|| s.pruned.values().flat_map(|m| m.values()).find_map(|p| p.costs.infer_b1_before))
        };
        cost_chart(
            root,
            n,
            |p| p.costs.infer_b1_after,
            unpruned_ms,
            format!("{}: test top-1 on the subset vs measured latency", n.network),
            "inference ms per image at batch 1, measured (after pruning; unpruned: before)",
        )
    }
}
